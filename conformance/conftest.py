"""Fixtures of the conformance suite.

The backend fixtures (``backend``, ``dsn``, ``table_prefix``, ``store``, ``open_more``)
come from the repository's root ``conftest.py``; this file adds what only the suite needs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from conformance.probes import existing_tables
from power_loop import SchemaPolicy, open_store
from power_loop.testing import drop_store_tables


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Cross-backend tests take an ordered (source, target) pair of the chosen backends.
    if "backend_pair" in metafunc.fixturenames:
        chosen = [b for b in metafunc.config.getoption("--backends").split(",") if b]
        pairs = list(itertools.permutations(chosen, 2))
        metafunc.parametrize("backend_pair", pairs, ids=[f"{a}-to-{b}" for a, b in pairs])


@pytest.fixture
async def bare_prefix(dsn: str, table_prefix: str) -> AsyncIterator[str]:
    """A table prefix with no tables yet; whatever the test creates under it is dropped."""
    yield table_prefix
    store = await open_store(dsn, table_prefix=table_prefix, schema=SchemaPolicy.NONE)
    try:
        # DROP TABLE IF EXISTS, whichever tables the test left: on MySQL a missing table
        # must not surface a server note as a warning (an error under this suite).
        await drop_store_tables(store)
        assert await existing_tables(store._database, table_prefix) == set()
    finally:
        await store.aclose()
