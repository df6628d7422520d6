"""Helpers for testing code built on power_loop, and for certifying a backend.

``backend_dsn`` finds a database for each backend (SQLite in a temporary directory,
PostgreSQL and MySQL from ``POWER_LOOP_TEST_PG_DSN`` / ``POWER_LOOP_TEST_MYSQL_DSN``, a
registered backend through its ``test_dsn``; ``certifiable_backends`` lists them all);
``fresh_prefix`` and ``drop_store_tables`` give each test its own tables in a shared
database. The conformance suite in the repository's ``conformance/`` is built on them.
"""

from power_loop.testing.backends import (
    BACKENDS,
    BackendUnavailable,
    backend_dsn,
    certifiable_backends,
    drop_store_tables,
    fresh_prefix,
)

__all__ = ["BACKENDS", "BackendUnavailable", "backend_dsn", "certifiable_backends",
           "drop_store_tables", "fresh_prefix"]
