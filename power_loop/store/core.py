"""The store's machinery: transactions with retries, and the fenced session-row update.

Every public store method opens a transaction through :meth:`StoreCore._write` or
:meth:`StoreCore._read` and calls its ``_txn`` twin, which takes the connection, so
operations compose inside one transaction.

Retries are honest about what they know. A transaction that certainly did not commit
(it failed before ``COMMIT``, or the engine answered the ``COMMIT`` with an error:
deadlock, serialization failure, busy file) runs again, through a lost connection too.
One whose ``COMMIT`` got no answer is *in doubt* (each dialect sorts its engine's errors,
:meth:`~power_loop.store.port.Dialect.commit_outcome`) and is never replayed: the
send path's writes and the lease claims are conditional (an expected seq, the pending
send and the lease's epoch, a lease owner unique to one send), so :meth:`StoreCore._settled`
reads whether they landed, and attempts again only when they did not, their condition
keeping a late landing of the first copy from doubling them. Anything else surfaces as
:class:`~power_loop.errors.CommitInDoubtError`. All attempts of one operation share one
time budget (``busy_timeout`` on SQLite).

Everything that changes a session goes through one ``UPDATE`` of its row: it hands out
seqs and send indexes (so they stay contiguous under any number of writers), locks the
row for the rest of the transaction, and, when the caller presents a lease epoch, is the
fencing check: a stale epoch matches no row, and nothing is written.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import Token
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from power_loop.errors import (
    CommitInDoubtError,
    ConnectionLostError,
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SeqConflictError,
    SessionNotFoundError,
    StoreError,
    TransientStoreError,
)
from power_loop.store.fused import fused_writes, message_body
from power_loop.store.port import CommitOutcome, Connection, Database, Row, retry_deadline
from power_loop.store.records import (
    MAX_TTL,
    Lease,
    NewMessage,
    SessionRecord,
    check_count,
    check_name,
    dump_json,
)
from power_loop.store.schema import TableNames
from power_loop.store.statements import SessionUpdate, Statements
from power_loop.store.window_cache import WindowCache

P = ParamSpec("P")
T = TypeVar("T")

_RETRIED = (TransientStoreError, ConnectionLostError)
"""What a transaction that certainly did not commit is attempted again after."""
_CONNECTION_ATTEMPTS = 3
"""Attempts through lost connections: enough to get past dead pooled connections (each
is dropped as it fails), few enough that a server that is down is reported at once."""
_BEFORE, _BODY, _COMMIT = 0, 1, 2
"""How far a transaction got when it failed."""
DEFAULT_RETRY_BUDGET = 30.0
"""Seconds one operation may spend on attempts, when the database states no budget."""


class NotLanded(enum.Enum):
    """What a check returns when the write it checks did not land."""

    NOT_LANDED = "not_landed"


NOT_LANDED: Final = NotLanded.NOT_LANDED


def _operation(fn: Callable[..., Any]) -> str:
    """A store operation's name from its transaction function's (``_append_txn``)."""
    name = getattr(fn, "__name__", "write")
    return name.strip("_").removesuffix("_txn") or "write"


def ttl_us(ttl: float) -> int:
    """A lease duration in seconds as database-clock microseconds (checked)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
        raise InvalidArgumentError(
            f"lease ttl must be a number of seconds above 0 and at most {MAX_TTL:.0f} "
            f"(a year), not {ttl!r}")
    return int(ttl * 1_000_000)


def not_found(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(f"session {session_id!r} does not exist", session_id=session_id)


async def _rollback_quietly(conn: Connection) -> None:
    """End the transaction a failed multi-statement text left open, if it can."""
    try:
        await conn.execute("ROLLBACK")
    except PowerLoopError:
        pass  # the connection is broken: the server rolls back as it drops it


class StoreCore(abc.ABC):
    """Connections, statements and transactions shared by all store operations.

    The store is made of parts, one per concern, each deriving from this class alone:
    :class:`~power_loop.store.sends.SendOps` (sends and their leases),
    :class:`~power_loop.store.context_ops.ContextOps` (folds, notes, projections),
    :class:`~power_loop.store.timer_ops.TimerOps`,
    :class:`~power_loop.store.claims.ClaimOps` (claims of stranded work) and
    :class:`~power_loop.store.children.ChildOps` (sub-agent links);
    :class:`~power_loop.store.store.Store` composes them and adds sessions, messages and
    leases. No two parts define the same member, so the order they are composed in
    decides nothing but the order of their initialisers. What one part uses of another
    is declared at the end of this class, abstract: each part type-checks on its own,
    and a store that lacks one cannot be made.
    """

    def __init__(self, db: Database, table_prefix: str, *, retries: int = 8) -> None:
        self._db = db
        self._names = TableNames(db.dialect, table_prefix)
        self._sql = Statements(db, self._names)
        self._fused = fused_writes(self._sql, db.dialect, self._names)
        """The send path's writes as one statement each, where the engine allows it."""
        self._retries = retries
        budget = getattr(db, "retry_budget", None)
        self._retry_budget = DEFAULT_RETRY_BUDGET if budget is None else float(budget)
        self._cache: WindowCache[Any] = WindowCache()

    @property
    def window_cache(self) -> WindowCache[Any]:
        """The sessions' rendered windows, shared by every loop over this store (see
        :mod:`power_loop.store.window_cache`; ``.stats()`` has its hit and miss counts)."""
        return self._cache

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self._db.dialect.name

    @property
    def table_prefix(self) -> str:
        return self._names.prefix

    @property
    def _database(self) -> Database:
        """The underlying port, for tools built on the store (export, workers)."""
        return self._db

    async def aclose(self) -> None:
        """Close the connections; transactions in flight finish first."""
        await self._db.close()

    async def _write(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a write transaction, retried while it certainly did
        not commit (see :meth:`_run`).

        ``fn`` must be safe to run again from the start (it only talks to ``conn``).

        Raises:
            CommitInDoubtError: the ``COMMIT`` failed without an answer; the write was
                not replayed (wrap the call in :meth:`_settled` to check it by reading).
        """
        return await self._run(True, fn, *args, **kwargs)

    async def _read(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read-only transaction over one snapshot, retried
        through transient failures and lost connections (a read is always safe again)."""
        return await self._run(False, fn, *args, **kwargs)

    def _budget(self) -> tuple[float, Token[float | None]]:
        """The deadline of the operation starting now, published to the driver (a
        SQLite writer waiting for the file's lock stops waiting then), and the token
        that withdraws it."""
        deadline = asyncio.get_running_loop().time() + self._retry_budget
        return deadline, retry_deadline.set(deadline)

    def _give_up(self, exc: PowerLoopError, attempt: int, deadline: float) -> bool:
        """Whether a rejected attempt is the last: out of attempts or of budget, a lost
        connection that keeps failing (the server is down, not one pooled connection),
        or an error that is not worth another attempt."""
        if not isinstance(exc, _RETRIED):
            return True
        limit = _CONNECTION_ATTEMPTS if isinstance(exc, ConnectionLostError) else self._retries
        return attempt + 1 >= limit or asyncio.get_running_loop().time() >= deadline

    async def _run(self, write: bool, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """One transaction, attempted again while it certainly did not commit.

        A failure before the body ran (checking a connection out, ``BEGIN``) or inside
        it never reached ``COMMIT``: the server rolls back, and the transaction runs
        again on another connection (a dead pooled one is dropped by the pool). A
        failure of the ``COMMIT`` itself is judged by the dialect
        (:meth:`~power_loop.store.port.Dialect.commit_outcome`): rejected, it runs
        again; in doubt, it is never replayed (:class:`CommitInDoubtError`). Attempts
        share one time budget (``busy_timeout`` on SQLite).
        """
        deadline, token = self._budget()
        try:
            attempt = 0
            while True:
                stage = _BEFORE
                try:
                    async with self._db.transaction(write=write) as conn:
                        stage = _BODY
                        result = await fn(conn, *args, **kwargs)
                        stage = _COMMIT
                    return result
                except _RETRIED as exc:
                    if write and stage == _COMMIT and self._in_doubt(exc):
                        raise self._doubt(_operation(fn), exc) from exc
                    if self._give_up(exc, attempt, deadline):
                        raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
                attempt += 1
        finally:
            retry_deadline.reset(token)

    async def _write_one(self, sql: str, args: Sequence[Any], *,
                         operation: str = "write") -> Row | None:
        """Run one statement on its own (its own transaction: one round trip), retried
        as :meth:`_write` is; return its first row. Once the statement is sent it is its
        own ``COMMIT``: a failure the dialect cannot call a rejection is in doubt."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # A cancellation requested before the write stops it before anything is
            # sent: once the one round trip is under way, whether it committed is unknown
            # until it answers (a transaction of several statements stops at its first).
            await asyncio.sleep(0)
        deadline, token = self._budget()
        try:
            attempt = 0
            while True:
                sent = False
                try:
                    async with self._db.autocommit() as conn:
                        sent = True
                        try:
                            return await conn.fetchone(sql, args)
                        except BaseException:
                            if self._fused is not None and self._fused.rollback_on_error:
                                await _rollback_quietly(conn)
                            raise
                except _RETRIED as exc:
                    if sent and self._in_doubt(exc):
                        raise self._doubt(operation, exc) from exc
                    if self._give_up(exc, attempt, deadline):
                        raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
                attempt += 1
        finally:
            retry_deadline.reset(token)

    def _in_doubt(self, exc: PowerLoopError) -> bool:
        """Whether a failed commit may have landed, as the dialect reads its cause."""
        cause = exc.__cause__
        if cause is None:
            # Raised by power_loop itself before anything was sent (a packet too large).
            return isinstance(exc, ConnectionLostError)
        return self._db.dialect.commit_outcome(cause) is CommitOutcome.IN_DOUBT

    def _doubt(self, operation: str, exc: PowerLoopError,
               resolution: str = "unverifiable") -> CommitInDoubtError:
        backend = self._db.dialect.name
        if resolution == "unverifiable":
            how = ("it was not replayed (this operation has no check): read what it would "
                   "have changed before writing again")
        else:
            how = ("checking whether it landed failed too: read what it would have "
                   "changed once the database answers, before writing again")
        return CommitInDoubtError(
            f"{backend}: the commit of {operation} failed without an answer "
            f"({exc.message}); it may or may not have landed, and {how}",
            backend=backend, operation=operation, resolution=resolution)

    async def _settled(self, operation: str, attempt: Callable[[], Awaitable[T]],
                       check: Callable[[], Awaitable[T | NotLanded]],
                       refusals: tuple[type[PowerLoopError], ...] = ()) -> T:
        """Run a verifiable write; settle a commit in doubt by reading, never by replay.

        ``attempt`` runs the write, which must be conditional (on an expected seq, a
        send's state, a lease's owner or epoch), so that of two copies at most one can
        ever land. When its commit is in doubt, ``check`` reads whether it landed: if it
        did, what it read is the result; if not (:data:`NOT_LANDED`), the write is
        attempted again, and its condition keeps a late landing of the first copy from
        doubling it. A copy attempted after a doubt that is refused with one of
        ``refusals`` (the condition failed) is checked too: the refusal may be the first
        copy's own doing.

        Raises:
            CommitInDoubtError: ``resolution="unreachable"``: the check could not read.
        """
        doubted = False
        for _ in range(self._retries):
            failure: PowerLoopError
            try:
                return await attempt()
            except CommitInDoubtError as doubt:
                failure = doubt
            except refusals as refused:
                if not doubted:
                    raise
                failure = refused
            doubted = True
            try:
                outcome = await check()
            except StoreError as exc:
                raise self._doubt(operation, exc, "unreachable") from failure
            if not isinstance(outcome, NotLanded):
                return outcome
            if not isinstance(failure, CommitInDoubtError):
                raise failure
        return await attempt()

    async def _update_session(self, conn: Connection, stmt: SessionUpdate, session_id: str,
                              assign: Sequence[Any], where: Sequence[Any] = (),
                              *, epoch: int | None = None,
                              refused: Callable[[Row], PowerLoopError] | None = None,
                              expect: int | None = None) -> Row:
        """Run a session-row update; return its ``RETURNING`` row or raise why not.

        ``refused`` turns the row's state (epoch, pending send, lease owner, lease time
        left in microseconds) into the error to raise when the session exists and the
        epoch is current but the update's own condition did not hold.
        """
        args = [*assign, session_id, *where]
        sql = stmt.plain
        if epoch is not None:
            args.append(epoch)
            sql = stmt.fenced
        if self._sql.returning:
            row = await conn.fetchone(sql, args)
        else:
            row = await conn.fetchone(stmt.select, [session_id]) if await conn.execute(
                sql, args) else None
        if row is not None:
            return row
        raise await self._why_missed(conn, session_id, epoch, refused, sql, expect=expect)

    async def _why_missed(self, conn: Connection, session_id: str, epoch: int | None,
                          refused: Callable[[Row], PowerLoopError] | None,
                          sql: str, *, expect: int | None = None) -> Exception:
        """Why a session-row update (``sql``) matched no row, from the row's state: the
        error to raise (``expect``: the ``next_seq`` an append was conditional on)."""
        state = await conn.fetchone(self._sql.session_state, [session_id])
        if state is None:
            return not_found(session_id)
        if epoch is not None and int(state[0]) != epoch:
            return LeaseLostError(
                f"session {session_id!r} was taken over (lease epoch {int(state[0])}, "
                f"this writer holds {epoch}); nothing was written",
                session_id=session_id, epoch=epoch)
        if epoch is not None and state[2] is None:
            return LeaseLostError(
                f"the lease on session {session_id!r} (epoch {epoch}) was released; "
                "nothing was written", session_id=session_id, epoch=epoch)
        if expect is not None:
            seq = await conn.fetchone(self._sql.next_seq, [session_id])
            if seq is not None and int(seq[0]) != expect:
                return SeqConflictError(
                    f"session {session_id!r} is at seq {int(seq[0])}, not the expected "
                    f"{expect}: another writer appended first; nothing was written (read "
                    "the session again before appending)",
                    session_id=session_id, expected=expect, actual=int(seq[0]))
        if refused is not None:
            return refused(state)
        return AssertionError(f"session update matched no row: {sql}")

    async def _require_session(self, conn: Connection, session_id: str) -> None:
        if await conn.fetchone(self._sql.next_seq, [session_id]) is None:
            raise not_found(session_id)

    async def _rows_of_session(self, conn: Connection, sql: str,
                               args: Sequence[Any]) -> list[Row]:
        """A query's rows; when there are none, raise if the session does not exist."""
        rows = await conn.fetch(sql, args)
        if not rows:
            await self._require_session(conn, args[0])
        return rows

    async def _insert_messages(self, conn: Connection, session_id: str, first_seq: int,
                               messages: Sequence[NewMessage],
                               send_index: int | None = None) -> None:
        """Insert messages at ``first_seq`` onwards (``send_index`` overrides theirs)."""
        rows = [(session_id, first_seq + i,
                 check_count(msg.send_index if send_index is None else send_index,
                             "send_index"),
                 check_name(msg.role, "role"), dump_json(message_body(msg)))
                for i, msg in enumerate(messages)]
        if len(rows) == 1:
            await conn.execute(self._sql.insert_message, rows[0])
        elif rows:
            await conn.executemany(self._sql.insert_message, rows)

    # -- what one part uses of another (each implemented by exactly one part) ---------

    @abc.abstractmethod
    async def _create_session_txn(self, conn: Connection, sid: str, parent_id: str | None,
                                  prompt: str, meta: str) -> SessionRecord:
        """Insert a session row and return it (Store; ChildOps makes children with it)."""

    @abc.abstractmethod
    async def _get_session_txn(self, conn: Connection, session_id: str) -> SessionRecord:
        """One session, or :class:`SessionNotFoundError` (Store; ChildOps reads a tree's
        root with it)."""

    @abc.abstractmethod
    async def _hand_back(self, releases: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run release statements within a short budget, ignoring failures (SendOps;
        TimerOps and ClaimOps give back a cancelled or doubted claim with it)."""

    @abc.abstractmethod
    async def _finish_send_txn(self, conn: Connection, session_id: str, send_index: int,
                               messages: Sequence[NewMessage], *, status: str,
                               epoch: int | None, release: Lease | None,
                               stop_reason: str | None, rounds: int,
                               usage: Mapping[str, Any] | None,
                               error: Mapping[str, Any] | None) -> int:
        """End the pending send inside the caller's transaction; return the first new
        seq (SendOps; ContextOps closes a send with it)."""

    @staticmethod
    @abc.abstractmethod
    def _not_pending(session_id: str, send_index: int, state: Row) -> PowerLoopError:
        """The error for a send that is not the pending one, from the session row's
        state (SendOps; ContextOps uses it too)."""
