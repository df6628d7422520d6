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
import contextlib
import functools
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
from pymysql.constants import CLIENT

from power_loop.errors import (
    ConnectionLostError,
    DatabaseNotFoundError,
    InvalidDSNError,
    PacketTooLargeError,
    PowerLoopError,
    StoreAuthenticationError,
    StoreError,
    TransientStoreError,
)
from power_loop.store.dsn import ParsedDSN, redact_dsn
from power_loop.store.mysql.dialect import MySQLDialect
from power_loop.store.mysql.tls import TLSSettings, offers_tls, tls_settings
from power_loop.store.port import Row, translate_error
from power_loop.store.unclosed import watch

_DIALECT = MySQLDialect()
SETTLE_SECONDS = 5.0
"""How long a cancelled statement that commits is waited for before its connection is
closed on it (see :meth:`MySQLConnection._settling`)."""
# sql_notes = 0: notes such as "table already exists" (an idempotent CREATE TABLE IF
# NOT EXISTS) would otherwise reach Python as warnings.
_SESSION_SETUP = (
    "SET time_zone = '+00:00', sql_notes = 0, "
    "sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,NO_ENGINE_SUBSTITUTION'"
)


def _refused(exc: BaseException, target: Mapping[str, Any]) -> StoreError:
    # The server's text names the user and host ("Access denied for user 'app'@'10.0.0.5'
    # (using password: YES)"); it never echoes the password.
    return StoreAuthenticationError(
        f"mysql: the server refused the login ({exc.args[-1]}): check the user and "
        "password in the DSN, and that this user may connect from this host",
        backend="mysql")


def _no_database(exc: BaseException, target: Mapping[str, Any]) -> StoreError:
    name, user = str(target.get("db") or ""), target.get("user") or ""
    create = f"CREATE DATABASE `{name.replace('`', '``')}`"
    if exc.args[0] == 1049:
        advice = f"does not exist: create it first ({create}), or fix the name in the DSN"
    else:  # 1044: the server does not say whether it exists to a user who may not use it
        advice = (f"does not exist, or user {user!r} may not use it: create it first "
                  f"({create}) and grant it (GRANT ALL ON `{name.replace('`', '``')}`.* "
                  f"TO '{user}'@'%'), or fix the name in the DSN")
    return DatabaseNotFoundError(f"mysql: the database {name!r} {advice}", backend="mysql",
                                 database=name)


def _too_large(exc: BaseException, target: Mapping[str, Any]) -> StoreError:
    return PacketTooLargeError(
        f"mysql: a statement is larger than the server's max_allowed_packet; nothing was "
        f"written: {_PACKET_ADVICE}")


_PACKET_ADVICE = ("store smaller values, or raise the server's limit (SET GLOBAL "
                  "max_allowed_packet = ..., and max_allowed_packet in its configuration)")

_CAUSES: dict[int, Callable[[BaseException, Mapping[str, Any]], StoreError]] = {
    1044: _no_database,   # ER_DBACCESS_DENIED_ERROR
    1045: _refused,       # ER_ACCESS_DENIED_ERROR
    1049: _no_database,   # ER_BAD_DB_ERROR
    1153: _too_large,     # ER_NET_PACKET_TOO_LARGE
    1698: _refused,       # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
}
"""Server error numbers with a cause of their own, and what to say about each."""


def _tls_failure(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (aiomysql reports a failed handshake as error 2003,
    "Can't connect", chained to the ``ssl`` module's error)."""
    for _ in range(4):
        if exc is None or isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _failure(exc: BaseException, target: Mapping[str, Any] | None = None) -> PowerLoopError:
    """The one place aiomysql's and PyMySQL's exceptions become power_loop's (the
    statement timeout and cancellation are handled where statements run)."""
    handshake = _tls_failure(exc)
    if handshake is not None:
        return ConnectionLostError(
            f"mysql: the TLS handshake failed ({handshake.reason or handshake}): check ssl-ca "
            "(the CA that signed the server's certificate), that the certificate names "
            "the host of the DSN (VERIFY_IDENTITY), and the client certificate",
            backend="mysql")
    args = getattr(exc, "args", ())
    cause = _CAUSES.get(args[0]) if args and isinstance(args[0], int) else None
    if cause is not None:
        return cause(exc, target or {})
    return translate_error(_DIALECT, exc)


def _decoded(row: Sequence[Any]) -> tuple[Any, ...]:
    # Identifier columns are VARBINARY (exact comparison); hand them back as text. A row
    # without any (a cold read's 10,000 bodies) is kept as it is: a third of the time.
    if bytes not in map(type, row):
        return tuple(row)
    return tuple(v.decode("utf-8") if type(v) is bytes else v for v in row)


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is how aiomysql reports that this task is being cancelled."""
    task = asyncio.current_task()
    return isinstance(exc.__context__, asyncio.CancelledError) or bool(
        task is not None and task.cancelling())


class MySQLConnection:
    """A :class:`~power_loop.store.port.Connection` over one aiomysql connection."""

    __slots__ = ("_conn", "_cursor", "_packet_limit", "_timeout")

    def __init__(self, conn: aiomysql.Connection, cursor: aiomysql.Cursor,
                 command_timeout: float | None, packet_limit: int | None) -> None:
        self._conn = conn
        self._cursor = cursor
        self._timeout = command_timeout
        self._packet_limit = packet_limit

    def _check_size(self, sql: str, params: Sequence[Any]) -> None:
        """Refuse a statement larger than the server's ``max_allowed_packet`` before it
        is sent: the server would refuse it and hang up. Bounds from the values'
        lengths decide almost always; only near the limit is the statement rendered."""
        limit = self._packet_limit
        if limit is None:
            return
        values = 0
        for param in params:
            if isinstance(param, (str, bytes)):
                values += len(param)
        # Escaping at most doubles a character, UTF-8 takes at most 4 bytes for one.
        if 4 * (len(sql) + values) + 32 * len(params) <= limit:
            return
        at_least = len(sql) + values
        size, exact = at_least, at_least <= limit
        if exact:
            size = len(self._cursor.mogrify(sql, tuple(params)).encode("utf-8"))
            if size <= limit:
                return
        raise PacketTooLargeError(
            f"mysql: a statement of {'' if exact else 'at least '}{size} bytes "
            f"is larger than the server's max_allowed_packet ({limit} bytes); nothing was "
            f"written: {_PACKET_ADVICE}", size=size, limit=limit)

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
        """Run a statement; aiomysql's exceptions become power_loop's (see _failure)."""
        for row in params if many else [params]:
            self._check_size(sql, row)
        if sql.endswith("COMMIT"):
            return await self._settling(self._attempt(sql, params, many, rows))
        return await self._attempt(sql, params, many, rows)

    async def _settling(self, attempt: Awaitable[Any]) -> Any:
        """Run a statement that commits (a ``COMMIT``, a one-round-trip write ending in
        one) so that a cancellation waits for its answer, up to :data:`SETTLE_SECONDS`.

        Closing the connection does not stop the server: it runs and commits what it
        received. Were the cancellation to go on at once, that commit could land after
        the caller has moved on (handed its lease back, a resumer built its window from
        what it read), and its rows show up behind everyone's back. Waited for, the
        write has either landed or not before the caller learns it was cancelled.
        """
        task = asyncio.ensure_future(attempt)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await asyncio.wait([task], timeout=SETTLE_SECONDS)
            finally:
                if not task.done():  # no answer in time (or cancelled again): cut it off
                    task.cancel()
                    self._conn.close()
                    await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # its failure, if any, is the cancellation's now
            raise

    async def _attempt(self, sql: str, params: Sequence[Any], many: bool, rows: bool) -> Any:
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
            failure = _failure(exc)
            if isinstance(failure, PacketTooLargeError):
                self._conn.close()  # the server hangs up after refusing the packet
            raise failure from exc

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

    def __init__(self, pool: aiomysql.Pool, parsed: ParsedDSN,
                 target: Mapping[str, Any], tls: TLSSettings) -> None:
        self._unclosed = watch(self, redact_dsn(parsed.location),
                               functools.partial(_let_go, pool))
        self._pool = pool
        self._target = {k: v for k, v in target.items() if k not in ("password", "ssl")}
        self._tls_required = tls.mode.required and "unix_socket" not in target
        self._timeout = parsed.options.command_timeout
        self._acquire_timeout = parsed.options.connect_timeout
        # Per connection: its one cursor and the server's max_allowed_packet.
        self._sessions: weakref.WeakKeyDictionary[
            aiomysql.Connection, tuple[aiomysql.Cursor, int]] = weakref.WeakKeyDictionary()

    @asynccontextmanager
    async def _acquired(self) -> AsyncIterator[MySQLConnection]:
        try:
            async with asyncio.timeout(self._acquire_timeout):
                conn = await self._pool.acquire()
        except Exception as exc:
            raise _failure(exc, self._target) from exc
        try:
            session = self._sessions.get(conn)
            if session is None:
                # A new connection: set the session up once, keep one cursor for it.
                cursor = await conn.cursor()
                wrapped = MySQLConnection(conn, cursor, self._timeout, None)
                if self._tls_required:
                    await _check_encrypted(conn, wrapped, self._target)
                await wrapped.execute(_SESSION_SETUP)
                await wrapped.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                (limit,), = await wrapped.fetch("SELECT @@max_allowed_packet")
                self._sessions[conn] = cursor, int(limit)
                wrapped = MySQLConnection(conn, cursor, self._timeout, int(limit))
            else:
                cursor, limit = session
                wrapped = MySQLConnection(conn, cursor, self._timeout, limit)
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
        self._unclosed.detach()
        connections = [*self._pool._free, *self._pool._used]
        writers = [c._writer for c in connections if c._writer is not None]
        self._pool.close()
        await self._pool.wait_closed()
        await _released(writers, self._acquire_timeout)


async def _released(writers: Sequence[asyncio.StreamWriter], budget: float) -> None:
    """Wait until closed connections have let go of their sockets. Over TLS, closing is
    a shutdown exchange with the server, finished some turns of the loop after aiomysql's
    ``close`` returns: a program that closes its store and then its event loop would
    otherwise leave the sockets open until the garbage collector finds them."""
    if not writers:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(budget):
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def _let_go(pool: aiomysql.Pool) -> None:
    """Close every connection of a pool nobody closed, without awaiting (aiomysql's
    ``terminate`` closes only those in use)."""
    pool.terminate()
    while pool._free:
        pool._free.popleft().close()


def _plain_text(target: Mapping[str, Any]) -> ConnectionLostError:
    where = f"{target.get('host')}:{target.get('port')}"
    return ConnectionLostError(
        f"mysql: the server at {where} does not offer TLS, and the DSN's ssl-mode "
        "requires it: enable TLS on the server (its ssl_cert and ssl_key settings), or "
        "lower ssl-mode to PREFERRED or DISABLED on a network you trust",
        backend="mysql", tls="required")


async def _check_encrypted(conn: aiomysql.Connection, wrapped: MySQLConnection,
                           target: Mapping[str, Any]) -> None:
    """Refuse a connection that came up without TLS (aiomysql falls back to plain text
    when the server does not offer it): a downgrade since the greeting was read."""
    rows = await wrapped.fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    if not rows or not rows[0][1]:
        conn.close()
        raise _plain_text(target)


async def _require_tls(target: Mapping[str, Any], connect_timeout: float) -> None:
    """Read the server's greeting and hang up, before any credentials are sent: a
    server that does not offer TLS is refused here (aiomysql would go on in plain text).
    What cannot be read is left for the real connection to report."""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(target["host"], target["port"])
            try:
                header = await reader.readexactly(4)
                greeting = await reader.readexactly(int.from_bytes(header[:3], "little"))
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return
    if offers_tls(greeting) is False:
        raise _plain_text(target)


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
    if "unix_socket" in parsed.extra:
        target["unix_socket"] = parsed.extra["unix_socket"]
    return target


async def connect(parsed: ParsedDSN) -> MySQLDatabase:
    """Open an aiomysql pool for the DSN."""
    options = parsed.options
    target = _target(parsed)
    tls = tls_settings(parsed.extra)
    target["ssl"] = tls.context()
    if tls.mode.required and "unix_socket" not in target:
        await _require_tls(target, options.connect_timeout)
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
            **target,
        )
    except Exception as exc:
        raise _failure(exc, target) from exc
    return MySQLDatabase(pool, parsed, target, tls)
