"""PostgreSQL through asyncpg: the only module that imports asyncpg.

Writes run in READ COMMITTED (row locks do the serializing); read transactions run in
REPEATABLE READ, READ ONLY, so a multi-statement read (an export) sees one snapshot.
asyncpg prepares and caches each statement on first use per connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from power_loop.errors import (
    DatabaseNotFoundError,
    PowerLoopError,
    StoreAuthenticationError,
    StoreError,
    TransientStoreError,
)
from power_loop.store.dsn import ParsedDSN, redact_dsn
from power_loop.store.port import Row, translate_error
from power_loop.store.postgres.dialect import PostgresDialect
from power_loop.store.postgres.pool import LightPool
from power_loop.store.unclosed import watch

_DIALECT = PostgresDialect()


def _database(exc: BaseException, parsed: ParsedDSN | None) -> str:
    path = urlsplit(parsed.location).path.lstrip("/") if parsed is not None else ""
    if path:
        return unquote(path)
    # Named by the environment or defaulted to the user's name: the server says which.
    named = re.search(r'database "(.*)" does not exist', str(exc))
    return named.group(1) if named else ""


def _refused(exc: BaseException, parsed: ParsedDSN | None) -> StoreError:
    # The server's text names the user and what it refused ("password authentication
    # failed for user ...", "role ... does not exist"); it never echoes a password.
    return StoreAuthenticationError(
        f"postgresql: the server refused the login ({exc}): check the user and password "
        "in the DSN, and that the server's pg_hba.conf admits this user from this host",
        backend="postgresql")


def _no_database(exc: BaseException, parsed: ParsedDSN | None) -> StoreError:
    name = _database(exc, parsed)
    plain = re.fullmatch(r"[a-z_][a-z0-9_$]*", name) is not None
    quoted = name if plain else '"' + name.replace('"', '""') + '"'
    return DatabaseNotFoundError(
        f"postgresql: the database {name!r} does not exist: create it first "
        f"(CREATE DATABASE {quoted}), or fix the database name in the DSN",
        backend="postgresql", database=name)


_CAUSES: dict[str, Callable[[BaseException, ParsedDSN | None], StoreError]] = {
    "28P01": _refused,       # invalid_password
    "28000": _refused,       # invalid_authorization_specification (unknown role, hba)
    "3D000": _no_database,   # invalid_catalog_name
}
"""SQLSTATEs with a cause of their own, and what to say about each."""


def _failure(exc: BaseException, command_timeout: float | None = None,
             parsed: ParsedDSN | None = None) -> PowerLoopError:
    """The one place asyncpg's exceptions become power_loop's."""
    if isinstance(exc, TimeoutError) and command_timeout is not None:
        return TransientStoreError(
            f"postgresql: a statement ran longer than command_timeout={command_timeout}s",
            backend="postgresql")
    cause = _CAUSES.get(getattr(exc, "sqlstate", None) or "")
    if cause is not None:
        return cause(exc, parsed)
    return translate_error(_DIALECT, exc)


class _Boundary:
    """The one boundary every asyncpg call runs inside (as httpx's
    ``map_httpcore_exceptions``): an exception leaving the block becomes power_loop's,
    ``raise ... from exc``. Stateless, so a connection keeps one for all its calls."""

    __slots__ = ("_parsed", "_timeout")

    def __init__(self, command_timeout: float | None = None,
                 parsed: ParsedDSN | None = None) -> None:
        self._timeout = command_timeout
        self._parsed = parsed

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Cancellation and other BaseExceptions pass; so does an error already ours.
        if isinstance(exc, Exception) and not isinstance(exc, PowerLoopError):
            raise _failure(exc, self._timeout, self._parsed) from exc


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0"...
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresConnection:
    """A :class:`~power_loop.store.port.Connection` over one asyncpg connection."""

    __slots__ = ("_boundary", "_conn")

    def __init__(self, conn: asyncpg.Connection, boundary: _Boundary) -> None:
        self._conn = conn
        self._boundary = boundary

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._boundary:
            status = await self._conn.execute(sql, *params)
        return _rowcount(status)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._boundary:
            await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._boundary:
            return list(await self._conn.fetch(sql, *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._boundary:
            row: Row | None = await self._conn.fetchrow(sql, *params)
        return row


class PostgresListener:
    """A ``LISTEN`` on a connection of its own (a pooled one would be reused by others)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def alive(self) -> bool:
        return not self._conn.is_closed()

    async def close(self) -> None:
        try:
            await self._conn.close(timeout=5)
        except Exception:
            self._conn.terminate()


class PostgresDatabase:
    """A :class:`~power_loop.store.port.Database` over a pool of asyncpg connections."""

    dialect = _DIALECT

    def __init__(self, pool: LightPool, parsed: ParsedDSN) -> None:
        self._unclosed = watch(self, redact_dsn(parsed.location),
                               pool.terminate)
        self._pool = pool
        self._parsed = parsed
        self._statements = _Boundary(parsed.options.command_timeout)
        self._opening = _Boundary(parsed=parsed)
        self._acquire_timeout = parsed.options.connect_timeout

    async def listen(self, channel: str, callback: Callable[[str], None],
                     lost: Callable[[], None] | None = None) -> PostgresListener:
        """Subscribe to ``channel`` on a new connection (see :class:`Notifying`)."""

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        def broken(_conn: object) -> None:
            if lost is not None:
                lost()

        with self._opening:
            conn = await asyncpg.connect(
                self._parsed.location, timeout=self._parsed.options.connect_timeout,
                server_settings={"application_name": "power_loop listener"})
            try:
                await conn.add_listener(channel, heard)
                conn.add_termination_listener(broken)
            except BaseException:
                conn.terminate()
                raise
        return PostgresListener(conn)

    def transaction(self, *, write: bool = True) -> _Transaction:
        return _Transaction(self, "BEGIN" if write else
                            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def autocommit(self) -> AbstractAsyncContextManager[PostgresConnection]:
        return _Pooled(self)

    async def close(self) -> None:
        self._unclosed.detach()
        try:
            await self._pool.close()
        except Exception:
            # asyncpg gives each connection command_timeout to close politely; past
            # that, they are cut (the server rolls back what they had open).
            self._pool.terminate()


async def _acquire(db: PostgresDatabase) -> asyncpg.Connection:
    conn = db._pool.take_idle()
    if conn is not None:
        return conn  # the common case: nothing to wait for, so no timer to arm
    with db._opening:
        async with asyncio.timeout(db._acquire_timeout):
            return await db._pool.acquire()


class _Pooled:
    """A pooled connection outside any transaction, given back on exit (a plain class:
    the send path's one-statement writes all come through here)."""

    __slots__ = ("_conn", "_db")

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def __aenter__(self) -> PostgresConnection:
        self._conn = await _acquire(self._db)
        return PostgresConnection(self._conn, self._db._statements)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if kind is None:
            self._db._pool.release(self._conn)
        else:  # a statement may have been cut off in flight: rolled back first
            await self._db._pool.release_unclean(self._conn)


class _Transaction:
    """``BEGIN`` ... ``COMMIT`` on a pooled connection; ``ROLLBACK`` when the body fails
    or is cancelled. A connection whose ``ROLLBACK`` could not run (cancelled again)
    is rolled back when it goes back to the pool: it never comes back inside the
    transaction."""

    __slots__ = ("_begin", "_conn", "_db")

    def __init__(self, db: PostgresDatabase, begin: str) -> None:
        self._db = db
        self._begin = begin

    async def __aenter__(self) -> PostgresConnection:
        db = self._db
        conn = self._conn = await _acquire(db)
        wrapped = PostgresConnection(conn, db._statements)
        try:
            await wrapped.execute(self._begin)
        except BaseException:
            await db._pool.release_unclean(conn)
            raise
        return wrapped

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        conn, pool = self._conn, self._db._pool
        if kind is None:
            try:
                with self._db._statements:
                    await conn.execute("COMMIT")
            except BaseException:
                await pool.release_unclean(conn)
                raise
            pool.release(conn)
            return
        try:
            await conn.execute("ROLLBACK")
        except BaseException as failure:
            await pool.release_unclean(conn)
            if not isinstance(failure, Exception):
                raise  # cancelled while rolling back: say so (an error is ignored)
            return
        pool.release(conn)


async def connect(parsed: ParsedDSN) -> PostgresDatabase:
    """Open a pool of asyncpg connections for the DSN (:mod:`.pool`)."""
    options = parsed.options

    def open_one() -> Awaitable[asyncpg.Connection]:
        opening: Awaitable[asyncpg.Connection] = asyncpg.connect(
            parsed.location, timeout=options.connect_timeout,
            command_timeout=options.command_timeout,
            # An application_name in the DSN wins (asyncpg would let this one win).
            server_settings={} if "application_name" in parsed.extra
            else {"application_name": "power_loop"})
        return opening

    # power_loop leaves no session state behind on pooled connections (no SET, LISTEN:
    # listeners get connections of their own, cursors or session locks), so no reset
    # query runs when one is given back; one whose transaction was cut off is rolled
    # back first (LightPool.release_unclean).
    pool = LightPool(open_one, options.pool_max_size, options.command_timeout)
    with _Boundary(parsed=parsed):
        try:
            await pool.fill(options.pool_min_size)
        except BaseException:
            pool.terminate()
            raise
    return PostgresDatabase(pool, parsed)
