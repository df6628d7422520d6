"""The toy backend's driver adapter: SQLite's, behind the toy's own dialect.

A backend that reuses a driver adapter wraps its :class:`~power_loop.store.Database`;
the store then renders every statement with the wrapper's dialect.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from power_loop import SchemaMissingError
from power_loop.store import Connection, ParsedDSN
from power_loop.store.sqlite import driver as sqlite_driver
from tests.toy_backend.dialect import ToySQLiteDialect


class ToyDatabase:
    """A :class:`~power_loop.store.Database` over SQLite's, speaking the toy dialect."""

    dialect = ToySQLiteDialect()

    def __init__(self, inner: sqlite_driver.SQLiteDatabase) -> None:
        self._inner = inner

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[Connection]:
        return self._inner.transaction(write=write)

    def autocommit(self) -> AbstractAsyncContextManager[Connection]:
        return self._inner.autocommit()

    async def close(self) -> None:
        await self._inner.close()


async def connect(parsed: ParsedDSN) -> ToyDatabase:
    """Open the file named by a ``toysqlite://`` DSN."""
    try:
        inner = await sqlite_driver.connect(parsed)
    except SchemaMissingError as exc:
        # What this backend reports is said in its own name.
        raise SchemaMissingError(exc.reason, backend=ToyDatabase.dialect.name,
                                 ddl=exc.ddl) from exc
    return ToyDatabase(inner)
