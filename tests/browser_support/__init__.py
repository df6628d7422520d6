"""A real browser for the web tests: Debian's Chromium, driven by Playwright.

Playwright's own browser builds cannot be downloaded here, so the system ``chromium`` is
launched through ``executable_path`` (``scripts/test`` installs it when missing; a machine
without it fails the browser tests rather than skipping them). The ``page`` fixture gives a
fresh page in a fresh context; when the test fails, a screenshot of it lands in
``test-artifacts/screenshots/`` (``POWER_LOOP_ARTIFACTS`` moves the folder), for CI to keep.

Use it from a test module with ``pytest_plugins``-free import::

    from tests.browser_support import browser, page  # noqa: F401 (fixtures)

The tests are synchronous (Playwright's sync API cannot run inside an event loop, and keeps
one running while it is open): they talk to servers in other processes, and to the store
through a thread of its own or before the browser starts. A module that uses the browser
holds no async test.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError("the browser tests need playwright: pip install -e '.[dev]'") from exc

_FAILED = pytest.StashKey[bool]()


def chromium_path() -> str:
    """The system Chromium, or a clear failure naming what to install."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no chromium on PATH: apt-get install chromium (scripts/test does this)")


def artifacts() -> Path:
    """Where failure screenshots go."""
    folder = Path(os.environ.get("POWER_LOOP_ARTIFACTS", "test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a module's browser tests.

    Module-scoped, not session-scoped: while Playwright's sync API is open it keeps an event
    loop running on the main thread, and every test that needs one of its own
    (pytest-asyncio, ``asyncio.run``) fails with "cannot be called from a running event
    loop". So a module that uses it holds only synchronous tests."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True,
            # root in CI: Chromium's sandbox refuses to start as root.
            args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; screenshotted into :func:`artifacts` when the test fails."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        if request.node.stash.get(_FAILED, False):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
            try:
                opened.screenshot(path=str(artifacts() / f"{name}.png"), full_page=True)
            except Exception as exc:  # the page may be the reason the test failed
                print(f"no screenshot of {request.node.nodeid}: {exc!r}")
        context.close()


def record_failure(item: pytest.Item, failed: bool) -> None:
    """Called by the root conftest's report hook: marks a test whose call failed."""
    if failed:
        item.stash[_FAILED] = True
