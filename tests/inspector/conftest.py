"""The browser fixtures, for the inspector's browser tests.

The browser here lives for one module, not the whole session: while Playwright's sync
API is open it keeps an event loop running on the main thread, and no test after it
could run one of its own (every async test, every ``asyncio.run``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser_support import chromium_path, page  # noqa: F401 (fixtures)
from tests.inspector.harness import ThreadedView


@pytest.fixture
def view(dsn: str, table_prefix: str) -> Iterator[ThreadedView]:
    """The test's own store, on a thread of its own (whatever loop runs on this one)."""
    opened = ThreadedView(dsn, table_prefix)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a module's browser tests."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()
