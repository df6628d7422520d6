"""MySQL and MariaDB through aiomysql: the only module that imports aiomysql.

Every connection runs with ``time_zone = '+00:00'`` (the database clock is read through
``NOW(6)``), strict SQL mode (a too-long value is an error, never silently cut),
``utf8mb4`` (4-byte characters round-trip), READ COMMITTED for writes (no gap locks
between appenders), and the FOUND_ROWS flag so an ``UPDATE`` reports matched rows as on
the other engines. Read transactions take a consistent REPEATABLE READ snapshot.
Server notes are switched off (``sql_notes = 0``): with strict mode, anything worth a
warning is an error anyway.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
from pymysql.constants import CLIENT

from power_loop.errors import InvalidDSNError, TransientStoreError
from power_loop.store.dsn import ParsedDSN
from power_loop.store.mysql.dialect import MySQLDialect
from power_loop.store.port import Row, translate_error

_DIALECT = MySQLDialect()
# sql_notes = 0: notes such as "table already exists" (an idempotent CREATE TABLE IF
# NOT EXISTS) would otherwise reach Python as warnings.
_SESSION_SETUP = (
    "SET time_zone = '+00:00', sql_notes = 0, "
    "sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,NO_ENGINE_SUBSTITUTION'"
)


def _decoded(row: Sequence[Any]) -> tuple[Any, ...]:
    # Identifier columns are VARBINARY (exact comparison); hand them back as text.
    return tuple(v.decode("utf-8") if type(v) is bytes else v for v in row)


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is how aiomysql reports that this task is being cancelled."""
    task = asyncio.current_task()
    return isinstance(exc.__context__, asyncio.CancelledError) or bool(
        task is not None and task.cancelling())


class MySQLConnection:
    """A :class:`~power_loop.store.port.Connection` over one aiomysql connection."""

    __slots__ = ("_conn", "_cursor", "_timeout")

    def __init__(self, conn: aiomysql.Connection, cursor: aiomysql.Cursor,
                 command_timeout: float | None) -> None:
        self._conn = conn
        self._cursor = cursor
        self._timeout = command_timeout

    async def _statement(self, sql: str, params: Sequence[Any], many: bool,
                         rows: bool) -> Any:
        if many:
            await self._cursor.executemany(sql, params)
            return None
        cursor = self._cursor
        count = await cursor.execute(sql, tuple(params))
        if not rows:
            while await cursor.nextset():  # a multi-statement text: read every result
                pass
            return count
        found = await cursor.fetchall() if cursor.description else ()
        while await cursor.nextset():
            if cursor.description:  # the last statement that returns rows is the answer
                found = await cursor.fetchall()
        return [_decoded(r) for r in found]

    async def _run(self, sql: str, params: Sequence[Any], *, many: bool = False,
                   rows: bool = False) -> Any:
        """The one place aiomysql's exceptions become power_loop's."""
        try:
            if self._timeout is None:
                return await self._statement(sql, params, many, rows)
            async with asyncio.timeout(self._timeout):
                return await self._statement(sql, params, many, rows)
        except asyncio.CancelledError:
            # A statement cut off half-way leaves the protocol out of step: the
            # connection is closed, and the pool drops it.
            self._conn.close()
            raise
        except TimeoutError as exc:
            # The server may still be running the statement: the connection is unusable.
            self._conn.close()
            raise TransientStoreError(
                f"mysql: a statement ran longer than command_timeout={self._timeout}s",
                backend="mysql") from exc
        except Exception as exc:
            if _cancelled(exc):
                self._conn.close()
                raise asyncio.CancelledError() from exc
            raise translate_error(_DIALECT, exc) from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        count: int = await self._run(sql, params)
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._run(sql, [tuple(r) for r in rows], many=True)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        result: list[Row] = await self._run(sql, params, rows=True)
        return result

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None


class MySQLDatabase:
    """A :class:`~power_loop.store.port.Database` over an aiomysql pool."""

    dialect = _DIALECT

    def __init__(self, pool: aiomysql.Pool, parsed: ParsedDSN) -> None:
        self._pool = pool
        self._timeout = parsed.options.command_timeout
        self._acquire_timeout = parsed.options.connect_timeout
        self._cursors: weakref.WeakKeyDictionary[aiomysql.Connection, aiomysql.Cursor] = (
            weakref.WeakKeyDictionary())

    @asynccontextmanager
    async def _acquired(self) -> AsyncIterator[MySQLConnection]:
        try:
            async with asyncio.timeout(self._acquire_timeout):
                conn = await self._pool.acquire()
        except Exception as exc:
            raise translate_error(_DIALECT, exc) from exc
        try:
            cursor = self._cursors.get(conn)
            if cursor is None:
                # A new connection: set the session up once, keep one cursor for it.
                cursor = await conn.cursor()
                wrapped = MySQLConnection(conn, cursor, self._timeout)
                await wrapped.execute(_SESSION_SETUP)
                await wrapped.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                self._cursors[conn] = cursor
            else:
                wrapped = MySQLConnection(conn, cursor, self._timeout)
            yield wrapped
        finally:
            self._pool.release(conn)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[MySQLConnection]:
        async with self._acquired() as wrapped:
            if write:
                await wrapped.execute("BEGIN")
            else:
                await wrapped.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await wrapped.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                yield wrapped
                await wrapped.execute("COMMIT")
            except BaseException:
                try:
                    await wrapped.execute("ROLLBACK")
                except Exception:
                    pass
                raise

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[MySQLConnection]:
        async with self._acquired() as wrapped:
            yield wrapped

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()


def _target(parsed: ParsedDSN) -> dict[str, Any]:
    parts = urlsplit(parsed.location)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise InvalidDSNError("a mysql DSN names its database: mysql://user:pass@host:3306/db")
    target: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else "",
        "db": database,
    }
    for key, value in parsed.extra.items():
        if key == "unix_socket":
            target["unix_socket"] = value
        else:
            raise InvalidDSNError(f"option {key!r} is not understood by the mysql backend")
    return target


async def connect(parsed: ParsedDSN) -> MySQLDatabase:
    """Open an aiomysql pool for the DSN."""
    options = parsed.options
    try:
        pool = await aiomysql.create_pool(
            minsize=options.pool_min_size,
            maxsize=options.pool_max_size,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=options.connect_timeout,
            # MULTI_STATEMENTS: a write transaction of the send path is one text
            # (power_loop/store/scripted.py); values are escaped by the driver, and the
            # texts are built only from validated identifiers.
            client_flag=CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
            pool_recycle=3600,
            **_target(parsed),
        )
    except InvalidDSNError:
        raise
    except Exception as exc:
        raise translate_error(_DIALECT, exc) from exc
    return MySQLDatabase(pool, parsed)
