"""The browser fixtures (tests/browser_support), and the test's store on a thread of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser_support import browser, page  # noqa: F401 (fixtures)
from tests.durability.harness import ThreadedStoreView


@pytest.fixture
def view(dsn: str, table_prefix: str) -> Iterator[ThreadedStoreView]:
    """The test's own store, on a thread of its own (whatever loop runs on this one)."""
    opened = ThreadedStoreView(dsn, table_prefix)
    try:
        yield opened
    finally:
        opened.close()
