"""Store operations behind context engineering: projections, the fold journal, notes.

Projections are derived rows (one per finished send, rebuildable from the message log);
folds are a journal (``started`` when a fold begins, ``done`` with its summary and the
notes it wrote when it commits, in one transaction); notes are the agent's durable
scratchpad. Every write is fenced by the session lease's epoch, like messages are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from power_loop.errors import InvalidArgumentError, LeaseLostError
from power_loop.store import settle
from power_loop.store.core import NotLanded, StoreCore
from power_loop.store.port import Connection, Database, Row
from power_loop.store.records import (
    Lease,
    MessageRecord,
    NewMessage,
    check_count,
    check_id,
    check_name,
    dump_json,
    from_us,
    load_json,
)
from power_loop.store.schema import TableNames
from power_loop.store.statements import message_from_row
from power_loop.store.waits import waits_of

if TYPE_CHECKING:
    from power_loop.store.store import Store

_FOLD_COLUMNS = ("session_id, fold_index, status, strategy, first_send, end_send, end_seq, "
                 "summary, notes_written, token_usage, created_at, finished_at")


@dataclass(frozen=True, slots=True)
class FoldRecord:
    """One entry of a session's fold journal.

    Attributes:
        fold_index: 0 for the first fold, then 1, 2...
        status: ``started`` (in progress, or cut off by a crash), ``done``, or
            ``failed`` (its strategy or model failed; ``usage["error"]`` says how). A
            ``started`` or ``failed`` entry is replaced when the fold is done again.
        first_send, end_send: The sends folded: ``first_send <= index < end_send``
            (always whole sends; every earlier fold's sends are included again, since
            its summary is folded into the new one).
        end_seq: The first message seq after the folded region.
        summary: The summary that stands for the folded sends.
        notes_written: The note operations the fold applied.
    """

    session_id: str
    fold_index: int
    status: str
    strategy: str
    first_send: int
    end_send: int
    end_seq: int
    summary: str
    notes_written: Sequence[Mapping[str, Any]]
    usage: Mapping[str, Any]
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class NoteRecord:
    """One agent note."""

    session_id: str
    note_id: int
    text: str
    created_at: datetime
    updated_at: datetime


def _fold(row: Row) -> FoldRecord:
    return FoldRecord(row[0], int(row[1]), row[2], row[3], int(row[4]), int(row[5]),
                      int(row[6]), load_json(row[7]), load_json(row[8]), load_json(row[9]),
                      from_us(row[10]), None if row[11] is None else from_us(row[11]))


def _note(session_id: str, row: Row) -> NoteRecord:
    return NoteRecord(session_id, int(row[0]), load_json(row[1]), from_us(row[2]),
                      from_us(row[3]))


class ContextStatements:
    """The SQL of the context tables, rendered once."""

    def __init__(self, db: Database, n: TableNames) -> None:
        d = db.dialect
        r = d.render
        p, f, nt, m, sd = n.projections, n.folds, n.notes, n.messages, n.sends
        self.put_projection = r(d.upsert(
            n.raw("projections"), ("session_id", "send_index", "version", "body", "created_at"),
            ("session_id", "send_index"), ("version", "body", "created_at"),
            {"created_at": "{now}"}))
        self.projections = r(f"SELECT send_index, version, body FROM {p} "
                             "WHERE session_id = ? AND send_index >= ? AND send_index < ? "
                             "ORDER BY send_index")
        self.latest_fold = r(f"SELECT {_FOLD_COLUMNS} FROM {f} WHERE session_id = ? "
                             "AND status = 'done' ORDER BY fold_index DESC LIMIT 1")
        self.folds = r(f"SELECT {_FOLD_COLUMNS} FROM {f} WHERE session_id = ? "
                       "ORDER BY fold_index")
        self.fold_at = r(f"SELECT status FROM {f} WHERE session_id = ? AND fold_index = ?")
        self.delete_fold = r(f"DELETE FROM {f} WHERE session_id = ? AND fold_index = ?")
        self.insert_fold = r(
            f"INSERT INTO {f} ({_FOLD_COLUMNS}) VALUES "
            "(?, ?, 'started', ?, ?, ?, ?, '\"\"', '[]', '{}', {now}, NULL)")
        self.finish_fold = r(
            f"UPDATE {f} SET status = 'done', summary = ?, notes_written = ?, token_usage = ?, "
            "finished_at = {now} WHERE session_id = ? AND fold_index = ? AND status = 'started'")
        self.fail_fold = r(
            f"UPDATE {f} SET status = 'failed', token_usage = ?, finished_at = {{now}} "
            "WHERE session_id = ? AND fold_index = ? AND status = 'started'")
        self.notes = r(f"SELECT note_id, body, created_at, updated_at FROM {nt} "
                       "WHERE session_id = ? ORDER BY note_id")
        self.note_count = r(f"SELECT COUNT(*), COALESCE(MAX(note_id), -1) FROM {nt} "
                            "WHERE session_id = ?")
        self.add_note = r(f"INSERT INTO {nt} (session_id, note_id, body, created_at, "
                          "updated_at) VALUES (?, ?, ?, {now}, {now})")
        self.update_note = r(f"UPDATE {nt} SET body = ?, updated_at = {{now}} "
                             "WHERE session_id = ? AND note_id = ?")
        self.delete_note = r(f"DELETE FROM {nt} WHERE session_id = ? AND note_id = ?")
        self.send_range = r(f"SELECT first_seq FROM {sd} WHERE session_id = ? "
                            "AND send_index >= ? ORDER BY send_index LIMIT 2")
        self.messages_between = r(
            f"SELECT seq, send_index, role, body, created_at FROM {m} "
            "WHERE session_id = ? AND seq >= ? AND seq < ? ORDER BY seq")


class ContextOps(StoreCore):
    """Projections, folds and notes (mixed into :class:`~power_loop.Store`)."""

    def __init__(self, db: Database, table_prefix: str, *, retries: int = 8) -> None:
        super().__init__(db, table_prefix, retries=retries)
        self._ctx = ContextStatements(db, self._names)

    async def _fence(self, conn: Connection, session_id: str, epoch: int) -> None:
        """Lock the session row for this transaction, or raise LeaseLostError."""
        await self._update_session(conn, self._sql.touch, session_id, [], epoch=epoch)

    async def close_send(self, session_id: str, send_index: int,
                         messages: Sequence[NewMessage], *, lease: Lease, status: str,
                         stop_reason: str | None, rounds: int, usage: Mapping[str, Any],
                         projections: Sequence[tuple[int, int, Mapping[str, Any]]] = (),
                         before_commit: Callable[[], None] | None = None,
                         finish_waits: Sequence[str] = ()) -> int:
        """End the pending send with its last messages, outcome and projections, and
        release ``lease``: one transaction, one statement where the engine folds it
        (:mod:`power_loop.store.fused`). Returns the first new seq.

        Args:
            before_commit: Called inside the transaction before its commit (where the
                write is one statement, just before it is sent).
            finish_waits: Ids of started calls' waits whose results ``messages`` holds:
                each one ``executing`` becomes ``done`` in the same transaction (see
                :meth:`~power_loop.store.store.Store.append_messages`).

        Raises:
            LeaseLostError: the lease's epoch is stale, or the lease was released.
        """
        async def check(conn: Connection) -> int | NotLanded:
            return await settle.send_closed(conn, self._sql, session_id, send_index,
                                            len(messages))

        return await self._settled(
            "close_send", lambda: self._close_send(session_id, send_index, messages, lease,
                                                   status, stop_reason, rounds, usage,
                                                   projections, before_commit,
                                                   tuple(finish_waits)),
            lambda: self._read(check), (LeaseLostError, InvalidArgumentError))

    async def _close_send(self, session_id: str, send_index: int,
                          messages: Sequence[NewMessage], lease: Lease, status: str,
                          stop_reason: str | None, rounds: int, usage: Mapping[str, Any],
                          projections: Sequence[tuple[int, int, Mapping[str, Any]]],
                          before_commit: Callable[[], None] | None,
                          finish_waits: Sequence[str] = ()) -> int:
        fused = self._fused
        if fused is None or finish_waits:  # the fused statement writes no waits
            return await self._write(self._close_send_txn, session_id, send_index, messages,
                                     lease, status, stop_reason, rounds, usage, projections,
                                     before_commit, finish_waits)
        sql, args = fused.finish_release(
            session_id, send_index, messages, lease.epoch,
            [status, stop_reason, int(rounds), dump_json(dict(usage)), None], projections)
        if before_commit is not None:
            before_commit()
        row = await self._write_one(sql, args, operation="close_send")
        if row is None:
            raise await self._read(
                self._why_missed, session_id, lease.epoch,
                lambda state: self._not_pending(session_id, send_index, state), sql)
        return int(row[0]) - len(messages)

    async def _close_send_txn(self, conn: Connection, session_id: str, send_index: int,
                              messages: Sequence[NewMessage], lease: Lease, status: str,
                              stop_reason: str | None, rounds: int, usage: Mapping[str, Any],
                              projections: Sequence[tuple[int, int, Mapping[str, Any]]],
                              before_commit: Callable[[], None] | None,
                              finish_waits: Sequence[str] = ()) -> int:
        first = await self._finish_send_txn(
            conn, session_id, send_index, messages, status=status, epoch=None, release=lease,
            stop_reason=stop_reason, rounds=rounds, usage=usage, error=None)
        if projections:
            await self._put_projections_txn(conn, session_id, projections)
        if finish_waits:
            store = cast("Store", self)  # the one class built on these ops
            await waits_of(store).finish_txn(conn, session_id, finish_waits)
        if before_commit is not None:
            before_commit()
        return first

    # -- projections -------------------------------------------------------------------

    async def _put_projections_txn(self, conn: Connection, session_id: str,
                                   rows: Sequence[tuple[int, int, Mapping[str, Any]]]) -> None:
        """Write (send_index, version, body) projections; replaces existing ones."""
        if rows:
            await conn.executemany(self._ctx.put_projection, [
                (session_id, index, version, dump_json(dict(body)))
                for index, version, body in rows])

    async def read_projections(self, session_id: str, from_send: int,
                               to_send: int) -> dict[int, tuple[int, Mapping[str, Any]]]:
        """``{send_index: (version, body)}`` for the sends in ``[from_send, to_send)``."""
        rows = await self._read(_fetch, self._ctx.projections,
                                [check_id(session_id), from_send, to_send])
        return {int(r[0]): (int(r[1]), load_json(r[2])) for r in rows}

    # -- folds -------------------------------------------------------------------------

    async def latest_fold(self, session_id: str) -> FoldRecord | None:
        """The newest fold that committed, or ``None``."""
        row = await self._read(_fetchone, self._ctx.latest_fold, [check_id(session_id)])
        return None if row is None else _fold(row)

    async def list_folds(self, session_id: str) -> list[FoldRecord]:
        """The whole fold journal, ``started`` entries included."""
        return [_fold(r) for r in await self._read(_fetch, self._ctx.folds,
                                                   [check_id(session_id)])]

    async def begin_fold(self, session_id: str, *, epoch: int, fold_index: int, strategy: str,
                         first_send: int, end_send: int, end_seq: int) -> None:
        """Journal a fold as ``started`` (replacing one a crash left ``started``)."""
        check_name(strategy, "strategy")
        for value, what in ((fold_index, "fold_index"), (first_send, "first_send"),
                            (end_send, "end_send"), (end_seq, "end_seq")):
            check_count(value, what)
        await self._write(self._begin_fold_txn, check_id(session_id), epoch, fold_index,
                          strategy, first_send, end_send, end_seq)

    async def _begin_fold_txn(self, conn: Connection, session_id: str, epoch: int,
                              fold_index: int, strategy: str, first_send: int, end_send: int,
                              end_seq: int) -> None:
        await self._fence(conn, session_id, epoch)
        existing = await conn.fetchone(self._ctx.fold_at, [session_id, fold_index])
        if existing is not None:
            if existing[0] == "done":
                raise InvalidArgumentError(
                    f"fold #{fold_index} of session {session_id!r} is already done")
            await conn.execute(self._ctx.delete_fold, [session_id, fold_index])
        await conn.execute(self._ctx.insert_fold, [session_id, fold_index, strategy,
                                                   first_send, end_send, end_seq])

    async def commit_fold(self, session_id: str, *, epoch: int, fold_index: int, summary: str,
                          note_ops: Sequence[Mapping[str, Any]], usage: Mapping[str, Any],
                          max_notes: int | None = None) -> list[Mapping[str, Any]]:
        """Mark a started fold done, with its summary and notes, in one transaction.

        Returns the note operations as applied (with the ids given to new notes).
        """
        if not isinstance(summary, str):
            raise InvalidArgumentError("a fold summary must be text")
        return await self._write(self._commit_fold_txn, check_id(session_id), epoch,
                                 fold_index, summary, list(note_ops), dict(usage), max_notes)

    async def _commit_fold_txn(self, conn: Connection, session_id: str, epoch: int,
                               fold_index: int, summary: str,
                               note_ops: Sequence[Mapping[str, Any]], usage: Mapping[str, Any],
                               max_notes: int | None) -> list[Mapping[str, Any]]:
        """:meth:`commit_fold` inside the caller's transaction."""
        await self._fence(conn, session_id, epoch)
        applied = [await self._apply_note_op(conn, session_id, op, max_notes) for op in note_ops]
        done = await conn.execute(self._ctx.finish_fold, [
            dump_json(summary), dump_json(applied), dump_json(dict(usage)), session_id,
            fold_index])
        if not done:
            raise InvalidArgumentError(
                f"fold #{fold_index} of session {session_id!r} is not started")
        return applied

    async def fail_fold(self, session_id: str, *, epoch: int, fold_index: int,
                        error: Mapping[str, Any]) -> bool:
        """Mark a started fold ``failed`` (``error`` is kept as ``usage["error"]``), fenced.

        Returns whether a started fold was marked (``False``: none is started).
        """
        usage = dump_json({"error": dict(error)})
        return bool(await self._write(self._fail_fold_txn, check_id(session_id), epoch,
                                      fold_index, usage))

    async def _fail_fold_txn(self, conn: Connection, session_id: str, epoch: int,
                             fold_index: int, usage: str) -> int:
        await self._fence(conn, session_id, epoch)
        return await conn.execute(self._ctx.fail_fold, [usage, session_id, fold_index])

    # -- notes -------------------------------------------------------------------------

    async def list_notes(self, session_id: str) -> list[NoteRecord]:
        """The session's notes, oldest first."""
        rows = await self._read(_fetch, self._ctx.notes, [check_id(session_id)])
        return [_note(session_id, r) for r in rows]

    async def apply_note(self, session_id: str, op: Mapping[str, Any], *, epoch: int,
                         max_notes: int | None = None) -> Mapping[str, Any]:
        """Apply one note operation (``add``, ``update``, ``delete``), fenced."""
        return await self._write(self._apply_note_txn, check_id(session_id), op, epoch,
                                 max_notes)

    async def _apply_note_txn(self, conn: Connection, session_id: str, op: Mapping[str, Any],
                              epoch: int, max_notes: int | None) -> Mapping[str, Any]:
        await self._fence(conn, session_id, epoch)
        return await self._apply_note_op(conn, session_id, op, max_notes)

    async def _apply_note_op(self, conn: Connection, session_id: str, op: Mapping[str, Any],
                             max_notes: int | None) -> Mapping[str, Any]:
        kind, text, note_id = op.get("op"), op.get("text"), op.get("note_id")
        if kind == "add":
            if not isinstance(text, str):
                raise InvalidArgumentError("a note needs text")
            row = await conn.fetchone(self._ctx.note_count, [session_id])
            assert row is not None
            if max_notes is not None and int(row[0]) >= max_notes:
                raise InvalidArgumentError(
                    f"the session already has {int(row[0])} notes (the most allowed is "
                    f"{max_notes}); update or delete one first")
            new_id = int(row[1]) + 1
            await conn.execute(self._ctx.add_note, [session_id, new_id, dump_json(text)])
            return {"op": "add", "note_id": new_id, "text": text}
        if not isinstance(note_id, int) or isinstance(note_id, bool):
            raise InvalidArgumentError(f"a note {kind} needs the note's id")
        if kind == "update":
            if not isinstance(text, str):
                raise InvalidArgumentError("a note update needs text")
            changed = await conn.execute(self._ctx.update_note,
                                         [dump_json(text), session_id, note_id])
        elif kind == "delete":
            changed = await conn.execute(self._ctx.delete_note, [session_id, note_id])
        else:
            raise InvalidArgumentError(f"unknown note operation {kind!r}")
        if not changed:
            raise InvalidArgumentError(f"there is no note #{note_id}")
        return {"op": kind, "note_id": note_id, **({"text": text} if kind == "update" else {})}

    # -- the log, by send --------------------------------------------------------------

    async def read_send_messages(self, session_id: str, send_index: int) -> list[MessageRecord]:
        """Every message of one send, from the immutable log."""
        check_count(send_index, "send_index")
        return await self._read(self._send_messages_txn, check_id(session_id), send_index)

    async def _send_messages_txn(self, conn: Connection, session_id: str,
                                 send_index: int) -> list[MessageRecord]:
        bounds = await conn.fetch(self._ctx.send_range, [session_id, send_index])
        if not bounds:
            await self._require_session(conn, session_id)
            return []
        end = (int(bounds[1][0]) if len(bounds) > 1 else
               int((await conn.fetchone(self._sql.next_seq, [session_id]) or [0])[0]))
        rows = await conn.fetch(self._ctx.messages_between,
                                [session_id, int(bounds[0][0]), end])
        return [message_from_row(session_id, r) for r in rows if int(r[1]) == send_index]


async def _fetch(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)


async def _fetchone(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    return await conn.fetchone(sql, args)
