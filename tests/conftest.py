"""Fixtures shared by the process-level tests (durability, workers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.durability.harness import StoreView


@pytest.fixture
def view(dsn: str, table_prefix: str) -> Iterator[StoreView]:
    """The store on the test's backend, with tables of its own, dropped afterwards."""
    opened = StoreView(dsn, table_prefix)
    try:
        yield opened
    finally:
        opened.close()
