"""A toy third-party backend: SQLite under the ``toysqlite://`` scheme.

It is built only from what a third party has: the public registry
(:class:`~power_loop.store.StoreBackend`), a :class:`~power_loop.store.Dialect` subclass
of its own that states every statement it needs (``dialect.py``), and a driver adapter
(``adapter.py``) that reuses SQLite's. Nothing in power_loop names it.

``BACKEND`` is what an entry point would name (``toysqlite = "tests.toy_backend:BACKEND"``
in the ``power_loop.backends`` group); ``plugin.py`` registers it with a call, for
``pytest -p tests.toy_backend.plugin --backends toysqlite conformance``.
"""

from __future__ import annotations

from pathlib import Path

from power_loop.store import StoreBackend


def _test_dsn(directory: Path) -> str:
    # An absolute path: toysqlite:////tmp/.../power_loop.db
    return f"toysqlite:///{directory.resolve() / 'power_loop.db'}"


BACKEND = StoreBackend(
    name="toysqlite",
    schemes=("toysqlite",),
    dialect="tests.toy_backend.dialect:ToySQLiteDialect",
    adapter="tests.toy_backend.adapter",
    options=frozenset({"busy_timeout", "synchronous", "readers", "connect_timeout", "create"}),
    file_dsn=True,
    test_dsn=_test_dsn,
)
"""The toy backend's registration."""
