"""The port between the store and a SQL engine.

The store is written once against two things:

* :class:`Database` and :class:`Connection`: a small async pool / transaction / execute /
  fetch interface, implemented by one driver adapter per backend (the only modules that
  import ``sqlite3``, ``asyncpg`` or ``aiomysql``);
* :class:`Dialect`: everything that differs between SQL engines, as capability flags and
  methods that return SQL text. A dialect never imports its driver, so DDL can be
  printed for an engine whose driver is not installed.

Shared code never asks which engine it runs on: it reads a flag or calls a method.
SQL handed to :meth:`Connection.execute` uses ``?`` placeholders; the adapter's dialect
has already rendered them into the driver's style (see :meth:`Dialect.render`).
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any, ClassVar, Protocol, runtime_checkable

from power_loop.errors import (
    ConnectionLostError,
    IntegrityConflictError,
    InvalidArgumentError,
    PowerLoopError,
    StorageFullError,
    StoreError,
    TransientStoreError,
)

Row = Sequence[Any]
"""One result row, indexed by column position."""

retry_deadline: ContextVar[float | None] = ContextVar("power_loop_retry_deadline",
                                                      default=None)
"""The event-loop time by which the store's current operation gives up retrying (its
whole budget, across attempts); a driver that waits for a lock stops waiting then."""


class ErrorKind(enum.Enum):
    """How a driver error is handled (see :meth:`Dialect.classify_error`)."""

    RETRYABLE = "retryable"
    """Deadlock, serialization failure, lock timeout, busy file: run the transaction again."""
    CONFLICT = "conflict"
    """A uniqueness or integrity constraint refused the write."""
    CONNECTION = "connection"
    """The connection broke: the outcome of an open transaction is unknown."""
    STORAGE_FULL = "storage_full"
    """No space left for the write."""
    FATAL = "fatal"
    """Anything else: a bug or a misconfiguration; never retried."""


class CommitOutcome(enum.Enum):
    """What a failed ``COMMIT`` (or a one-statement write, its own commit) left behind
    (see :meth:`Dialect.commit_outcome`)."""

    REJECTED = "rejected"
    """The engine answered with an error: the transaction certainly did not commit, and
    running it again is safe."""
    IN_DOUBT = "in_doubt"
    """No answer (the connection broke, a client-side timeout, a cancelled wait): the
    transaction may have committed. Never replayed blindly."""


class ColumnType(enum.Enum):
    """Portable column types; each dialect maps them to its own DDL."""

    ID = "id"
    """A caller-chosen identifier (session id...): 1 to 200 characters, compared exactly."""
    NAME = "name"
    """A short ASCII token chosen by power_loop (role, status...): up to 64 characters."""
    INT = "int"
    BIGINT = "bigint"
    TIMESTAMP = "timestamp"
    """Microseconds since the Unix epoch, UTC, as a 64-bit integer."""
    TEXT = "text"
    """Text of any length (MySQL: LONGTEXT, so a multi-megabyte value fits)."""
    JSON = "json"
    """A JSON document kept as exact text (``\\u0000`` and key order survive)."""


ID_MAX_CHARS = 200
"""The longest identifier (session id, lease owner) power_loop accepts."""


class Dialect(abc.ABC):
    """SQL text and capabilities of one engine: abstract, engine-neutral.

    A subclass sets :attr:`name` and :attr:`now_us`, the flags that differ from these
    defaults, and implements every abstract method: each engine states its own SQL, so a
    new engine cannot inherit another engine's behaviour silently. What is left here is
    standard SQL (double-quoted identifiers, ``FOR UPDATE``) or driven by a flag.
    Engines whose SQL coincides share it explicitly: :func:`insert_on_conflict` and
    :func:`create_index_if_not_exists`.

    The flags are read by the store and by the conformance suite alike, so a test that
    exercises a capability runs exactly where the runtime relies on it.
    """

    name: ClassVar[str]
    """The backend's public name: ``sqlite``, ``postgresql`` or ``mysql``."""

    paramstyle: ClassVar[str] = "qmark"
    """``qmark`` (``?``), ``numeric`` (``$1``) or ``format`` (``%s``)."""

    supports_update_returning: ClassVar[bool] = False
    """``UPDATE ... RETURNING`` is available (saves a round trip after an update)."""

    supports_writable_cte: ClassVar[bool] = False
    """Data-modifying statements in ``WITH`` (an ``UPDATE ... RETURNING`` that
    feeds ``INSERT`` statements) and :meth:`array_rows`: each write transaction of the send path is
    then one statement, run on its own (one round trip, atomic by itself)."""

    supports_multi_statements: ClassVar[bool] = False
    """The driver sends several ``;``-separated statements in one text, and the
    connection returns the rows of the last one that returns rows: each write
    transaction of the send path is then one ``BEGIN; ...; COMMIT`` text."""

    supports_row_locks: ClassVar[bool] = False
    """``SELECT ... FOR UPDATE`` locks rows; without it the engine locks the database."""

    supports_skip_locked: ClassVar[bool] = False
    """``FOR UPDATE SKIP LOCKED`` is available for claim queries."""

    transactional_ddl: ClassVar[bool] = False
    """``CREATE TABLE`` can be rolled back with the transaction it ran in."""

    inline_indexes: ClassVar[bool] = False
    """Indexes are declared inside ``CREATE TABLE`` (no ``CREATE INDEX IF NOT EXISTS``)."""

    max_identifier_length: ClassVar[int] = 63
    """The longest table or index name the engine accepts."""

    now_us: ClassVar[str]
    """SQL expression for the database clock, in microseconds since the epoch (UTC)."""

    notify_sql: ClassVar[str | None] = None
    """A statement that wakes the listeners of a channel when its transaction commits
    (parameters: the channel, a time in microseconds; the payload says how many
    microseconds until that time), or ``None`` where the engine cannot."""

    @property
    def ddl_now_us(self) -> str:
        """The clock in the DDL script (runnable by the engine's own tools)."""
        return self.now_us

    table_options: ClassVar[str] = ""
    """Text appended to every ``CREATE TABLE`` (engine, character set)."""

    # -- rendering ---------------------------------------------------------------------

    def quote(self, identifier: str) -> str:
        """Quote a (pre-validated) identifier for use in SQL."""
        return f'"{identifier}"'

    def render(self, sql: str) -> str:
        """Turn ``?`` placeholders into the driver's style; ``{now}`` into the clock."""
        sql = sql.replace("{now}", self.now_us)
        if self.paramstyle == "qmark":
            return sql
        if self.paramstyle == "format":
            return sql.replace("%", "%%").replace("?", "%s")
        counter = iter(range(1, 10_000))
        return re.sub(r"\?", lambda _: f"${next(counter)}", sql)

    @abc.abstractmethod
    def column_type(self, kind: ColumnType) -> str:
        """The DDL type for a portable column type."""

    def for_update(self, *, skip_locked: bool = False) -> str:
        """Row-lock suffix for a ``SELECT``; empty where the engine locks otherwise."""
        if not self.supports_row_locks:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    @abc.abstractmethod
    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str],
        expressions: Mapping[str, str] | None = None, source: str | None = None,
    ) -> str:
        """``INSERT`` that updates ``update`` columns when a row with ``key`` exists.

        With an empty ``update`` the statement inserts or does nothing. ``expressions``
        gives SQL to use instead of a ``?`` for some columns (``{now}``...); ``source``,
        a query to insert the rows of instead of ``VALUES``.
        """
    def array_rows(self, alias: str, columns: Sequence[tuple[str, ColumnType]]) -> str:
        """A ``FROM`` item ``alias`` with one row per element of parallel array
        parameters (one ``?`` per column, in order, each bound to a list), its columns
        named as given, plus ``i``, the element's 1-based position.

        Only engines with :attr:`supports_writable_cte` implement it.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def create_index(self, name: str, table: str, columns: Sequence[str], unique: bool) -> str:
        """A ``CREATE INDEX``: idempotent, unless :attr:`inline_indexes` is set (then the
        schema declares indexes inside ``CREATE TABLE`` and checks before adding one)."""

    @abc.abstractmethod
    def migration_lock(self, key: int) -> tuple[str | None, str | None]:
        """SQL that takes and releases a lock serializing schema migrations.

        ``None`` means the transaction's own write lock already serializes them.
        """

    @abc.abstractmethod
    def table_exists(self) -> str:
        """A query with one ``?`` (a table name) returning a row when the table exists."""

    @abc.abstractmethod
    def column_exists(self) -> str:
        """A query with two ``?`` (table, column) returning a row when the column exists."""

    @abc.abstractmethod
    def index_exists(self) -> str:
        """A query with two ``?`` (table, index) returning a row when the index exists."""

    def feed_trigger(self, prefix: str, channel: str, *, waits: bool = False) -> list[str]:
        """Idempotent DDL making every commit that appends messages to a session, or
        opens or closes one of its sends (and, with ``waits``, opens or decides one of
        its waits: schema version 8), notify ``channel`` with the session's id (the
        session feed's wake-up); empty where the engine cannot notify."""
        return []

    def drop_feed_trigger(self, prefix: str) -> list[str]:
        """What :meth:`feed_trigger` created and dropping the tables leaves behind."""
        return []

    @abc.abstractmethod
    def vacuum(self, tables: Sequence[str]) -> list[str]:
        """Statements that reclaim space and refresh statistics, run outside transactions."""

    # -- errors ------------------------------------------------------------------------

    @abc.abstractmethod
    def classify_error(self, exc: BaseException) -> ErrorKind:
        """Sort a driver exception into an :class:`ErrorKind` (by code, not by type)."""

    @abc.abstractmethod
    def commit_outcome(self, exc: BaseException) -> CommitOutcome:
        """Whether ``exc``, raised by a ``COMMIT`` (or by a write that is one statement
        in autocommit), means the transaction certainly did not commit
        (:attr:`CommitOutcome.REJECTED`) or may have (:attr:`CommitOutcome.IN_DOUBT`).

        ``exc`` is the driver's exception (or an ``OSError``/``TimeoutError``). An error
        the engine sent back as an answer is a rejection; a missing answer is doubt.
        When unsure, answer ``IN_DOUBT``: a doubt is settled by reading, a wrong
        rejection duplicates writes."""


def insert_on_conflict(
    dialect: Dialect, table: str, columns: Sequence[str], key: Sequence[str],
    update: Sequence[str], expressions: Mapping[str, str] | None = None,
    source: str | None = None,
) -> str:
    """:meth:`Dialect.upsert` as ``INSERT ... ON CONFLICT (key) DO UPDATE`` (or ``DO
    NOTHING``), for the engines that speak it (PostgreSQL 9.5+, SQLite 3.24+)."""
    q = dialect.quote
    cols = ", ".join(q(c) for c in columns)
    marks = ", ".join((expressions or {}).get(c, "?") for c in columns)
    rows = source if source is not None else f"VALUES ({marks})"
    keys = ", ".join(q(c) for c in key)
    head = f"INSERT INTO {q(table)} ({cols}) {rows} ON CONFLICT ({keys}) DO "
    if not update:
        return head + "NOTHING"
    return head + "UPDATE SET " + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in update)


def create_index_if_not_exists(dialect: Dialect, name: str, table: str,
                               columns: Sequence[str], unique: bool) -> str:
    """:meth:`Dialect.create_index` as ``CREATE [UNIQUE] INDEX IF NOT EXISTS``, for the
    engines that speak it (PostgreSQL 9.5+, SQLite, MariaDB; not MySQL)."""
    cols = ", ".join(dialect.quote(c) for c in columns)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return (f"CREATE {kind} IF NOT EXISTS {dialect.quote(name)} "
            f"ON {dialect.quote(table)} ({cols})")


class Connection(Protocol):
    """One connection, inside a transaction opened by :meth:`Database.transaction`."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it matched."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return all its rows."""
        ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query and return its first row, or ``None``."""
        ...


class Database(Protocol):
    """A pool of connections to one database, behind one dialect."""

    dialect: Dialect

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[Connection]:
        """A connection inside a transaction, committed on exit, rolled back on error.

        ``write=False`` promises the body only reads, which lets SQLite serve it from a
        reader connection while a writer works.
        """
        ...

    def autocommit(self) -> AbstractAsyncContextManager[Connection]:
        """A connection outside any transaction (``VACUUM`` and friends)."""
        ...

    async def close(self) -> None:
        """Close every connection; waits for transactions in flight."""
        ...


class Listener(Protocol):
    """A subscription opened by :meth:`Notifying.listen` (one connection of its own)."""

    def alive(self) -> bool:
        """Still subscribed (its connection has not been lost)."""
        ...

    async def close(self) -> None:
        """Unsubscribe and close its connection."""
        ...


@runtime_checkable
class Notifying(Protocol):
    """A :class:`Database` whose engine can wake other processes (PostgreSQL's
    ``LISTEN``/``NOTIFY``): what :attr:`Dialect.notify_sql` sends, ``listen`` hears."""

    async def listen(self, channel: str, callback: Callable[[str], None],
                     lost: Callable[[], None] | None = None) -> Listener:
        """Call ``callback(payload)`` for each notification on ``channel``, and
        ``lost()`` if the subscription's connection breaks."""
        ...


def translate_error(dialect: Dialect, exc: BaseException) -> PowerLoopError:
    """Map a driver exception to the most specific power_loop error.

    Each driver adapter calls this at its one boundary and raises the result
    ``from exc``.
    """
    backend = dialect.name
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UnicodeEncodeError):
        return InvalidArgumentError(
            "text is not valid Unicode (it holds a lone surrogate) and cannot be stored; "
            "clean it before passing it to power_loop"
        )
    kind = dialect.classify_error(exc)
    if kind is ErrorKind.RETRYABLE:
        return TransientStoreError(f"{backend}: transient failure ({detail})", backend=backend)
    if kind is ErrorKind.CONFLICT:
        return IntegrityConflictError(f"{backend}: constraint violated ({detail})",
                                      backend=backend)
    if kind is ErrorKind.CONNECTION:
        return ConnectionLostError(
            f"{backend}: connection to the database failed ({detail}); check that the "
            "server is up and the DSN is right", backend=backend)
    if kind is ErrorKind.STORAGE_FULL:
        return StorageFullError(f"{backend}: the database is out of space ({detail})",
                                backend=backend)
    return StoreError(f"{backend}: {detail}", backend=backend)
