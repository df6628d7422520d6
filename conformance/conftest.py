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
        # Only the tables that exist: on MySQL, DROP TABLE IF EXISTS of a missing table
        # raises a server note as a Python warning (known_bugs.MYSQL_NOTES_AS_WARNINGS),
        # which this suite's warnings-as-errors turns into a failed teardown.
        quote = store.database.dialect.quote
        found = await existing_tables(store.database, table_prefix)
        async with store.database.autocommit() as conn:
            for table in sorted(found):
                await conn.execute(f"DROP TABLE {quote(table_prefix + table)}")
    finally:
        await store.aclose()
