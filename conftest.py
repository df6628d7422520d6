"""Fixtures shared by tests/ and conformance/: every backend-aware test runs on all three.

``--backends sqlite,postgresql`` narrows the run deliberately; it also takes the name of
a registered third-party backend (``-p your.plugin --backends yours``, or an installed
``power_loop.backends`` entry point), which is how that backend is certified. And
``@pytest.mark.backends("postgresql", "mysql")`` keeps a test to the backends its
property is about. A backend that is asked for but has no server configured fails its
tests: it is never skipped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from power_loop import Store, open_store
from power_loop.testing import (
    BACKENDS,
    BackendUnavailable,
    backend_dsn,
    certifiable_backends,
    drop_store_tables,
    fresh_prefix,
)

_outcomes: Counter[tuple[str, str]] = Counter()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backends", default=",".join(BACKENDS),
                     help="comma-separated backends to run backend tests on")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = [b for b in metafunc.config.getoption("--backends").split(",") if b]
        unknown = set(chosen) - set(BACKENDS)
        if unknown and unknown - set(certifiable_backends()):
            raise pytest.UsageError(
                f"unknown backends {sorted(unknown)}; choose from {certifiable_backends()} "
                "(a third-party backend is registered before collection: -p your.plugin)")
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is not None:  # a property only some backends have (a server's clock)
            chosen = [b for b in chosen if b in marker.args]
        metafunc.parametrize("backend", chosen)


@pytest.fixture
def dsn(backend: str, tmp_path: Path) -> str:
    try:
        return backend_dsn(backend, tmp_path)
    except BackendUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def table_prefix() -> str:
    return fresh_prefix()


@pytest.fixture
async def store(dsn: str, table_prefix: str) -> AsyncIterator[Store]:
    """A store with its own tables, dropped afterwards."""
    opened = await open_store(dsn, table_prefix=table_prefix)
    try:
        yield opened
    finally:
        await drop_store_tables(opened)
        await opened.aclose()


@pytest.fixture
async def open_more(dsn: str, table_prefix: str) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """Open further stores on the same database and tables (other 'processes')."""
    opened: list[Store] = []

    async def _open(**kwargs: Any) -> Store:
        kwargs.setdefault("table_prefix", table_prefix)
        s = await open_store(dsn, **kwargs)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        await s.aclose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "page" in getattr(item, "fixturenames", ()):
        from tests.browser_support import record_failure  # only browser tests import it

        record_failure(item, True)
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec else None
    if backend and (report.when == "call" or report.outcome == "failed"):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.outcome == "skipped" else "xpassed"
        _outcomes[(backend, outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _outcomes:
        return
    terminalreporter.section("backends")
    for backend in dict.fromkeys([*BACKENDS, *(b for b, _ in _outcomes)]):
        counts = {o: n for (b, o), n in _outcomes.items() if b == backend}
        if counts:
            parts = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
            terminalreporter.write_line(f"{backend:<11} {parts}")
