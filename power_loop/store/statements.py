"""Every SQL statement the store runs, rendered once per dialect and table prefix,
and the decoders that turn their rows into records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from power_loop.store.migrations import session_tables
from power_loop.store.port import Database, Row
from power_loop.store.records import (
    MessageRecord,
    SendRecord,
    SessionRecord,
    from_us,
    load_json,
)
from power_loop.store.schema import TableNames

SESSION_COLUMNS = ("id, parent_id, created_at, updated_at, system_prompt, metadata, "
                   "next_seq, send_count, pending_send, lease_owner, lease_epoch, "
                   "lease_expires_at, incarnation, resume_attempts, parked_at")
MESSAGE_COLUMNS = "seq, send_index, role, body, created_at"
SEND_COLUMNS = ("session_id, send_index, status, source, request_key, first_seq, created_at, "
                "finished_at, stop_reason, rounds, token_usage, error")

ASSISTANT_KEY = 2**62
"""Where a message's key starts for an assistant's (see ``Store.read_message_texts``): a
user message's key is its send index, an assistant's this plus its send index, a tool
result's ``-1 - send_index``; one column for two, a tenth of a cold read's time."""

_TAKE_LEASE = "lease_epoch = lease_epoch + 1, lease_owner = ?, lease_expires_at = {now} + ?"
_LEASE_FREE = " AND (lease_owner IS NULL OR lease_expires_at < {now})"
_RELEASE = "lease_owner = NULL, lease_expires_at = NULL"

# Session-row updates of the send path as (assignments, extra condition, returned
# columns); the fused statements (power_loop/store/fused.py) build on them too.
APPEND = ("next_seq = next_seq + ?", "", "next_seq")
APPEND_EXTEND = ("next_seq = next_seq + ?, lease_expires_at = {now} + ?", "", "next_seq")
EXPECT_SEQ = " AND next_seq = ?"
"""The condition of an append that names the seq it expects (verifiable: two copies of
it can never both land)."""
BEGIN_SEND = (
    f"{_TAKE_LEASE}, pending_send = send_count, send_count = send_count + 1, "
    "next_seq = next_seq + ?",
    f"{_LEASE_FREE} AND pending_send IS NULL",
    "lease_epoch, lease_expires_at, send_count, next_seq, system_prompt, incarnation, metadata")
FINISH_SEND = ("pending_send = NULL, resume_attempts = 0, parked_at = NULL, "
               "next_seq = next_seq + ?", " AND pending_send = ?", "next_seq")
FINISH_SEND_RELEASE = (f"pending_send = NULL, resume_attempts = 0, parked_at = NULL, "
                       f"next_seq = next_seq + ?, {_RELEASE}", " AND pending_send = ?",
                       "next_seq")


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """An ``UPDATE`` of one session row, in its fenced and unfenced forms.

    The ``returning`` columns come back through ``RETURNING`` where the engine has it,
    else through a ``SELECT`` in the same transaction (the row is locked by then).
    """

    plain: str
    fenced: str
    select: str


class Statements:
    """The store's SQL for one dialect and prefix."""

    def update_statement(self, assign: str, where: str, returning: str) -> SessionUpdate:
        """An update of one session row (``assign``, extra ``where``) returning columns.

        MySQL evaluates SET assignments left to right, each seeing the ones before; every
        assignment given here must read only columns not yet assigned, so the result is
        the same as on engines that read the old row throughout. The fenced form matches
        only while the lease of that epoch is held: a newer grant changes the epoch, a
        release clears the owner.
        """
        r, s = self._dialect.render, self._sessions
        tail = f" RETURNING {returning}" if self.returning else ""
        return SessionUpdate(
            plain=r(self.update_text(assign, where) + tail),
            fenced=r(self.update_text(assign, where, fenced=True) + tail),
            select=r(f"SELECT {returning} FROM {s} WHERE id = ?"),
        )

    def update_text(self, assign: str, where: str, *, fenced: bool = False) -> str:
        """The unrendered ``UPDATE`` of :meth:`update_statement`, without ``RETURNING``:
        arguments ``assign``'s, the session id, ``where``'s, then (fenced) the epoch."""
        fence = " AND lease_owner IS NOT NULL AND lease_epoch = ?" if fenced else ""
        return (f"UPDATE {self._sessions} SET {assign}, updated_at = {{now}} "
                f"WHERE id = ?{where}{fence}")

    def __init__(self, db: Database, names: TableNames) -> None:
        d = db.dialect
        r = d.render
        s, m, sd = names.sessions, names.messages, names.sends
        self.returning = d.supports_update_returning
        self._dialect, self._sessions = d, s
        update = self.update_statement

        # -- sessions
        self.insert_session = r(
            f"INSERT INTO {s} ({SESSION_COLUMNS}) "
            "VALUES (?, ?, {now}, {now}, ?, ?, 0, 0, NULL, NULL, 0, NULL, ?, 0, NULL)")
        self.get_session = r(f"SELECT {SESSION_COLUMNS} FROM {s} WHERE id = ?")
        self.list_sessions = r(
            f"SELECT {SESSION_COLUMNS} FROM {s} ORDER BY created_at DESC, id DESC LIMIT ?")
        self.list_sessions_before = r(
            f"SELECT {SESSION_COLUMNS} FROM {s} WHERE created_at < ? "
            "OR (created_at = ? AND id < ?) ORDER BY created_at DESC, id DESC LIMIT ?")
        self.session_state = r(
            f"SELECT lease_epoch, pending_send, lease_owner, lease_expires_at - {{now}} "
            f"FROM {s} WHERE id = ?")
        self.next_seq = r(f"SELECT next_seq FROM {s} WHERE id = ?")
        self.delete = [
            r(f"DELETE FROM {d.quote(names.raw(t))} WHERE {t.session_column} = ?")
            for t in reversed(session_tables())
        ]
        # -- messages
        self.append = update(*APPEND)
        self.append_extend = update(*APPEND_EXTEND)
        self.append_expect = update(APPEND[0], EXPECT_SEQ, APPEND[2])
        self.append_extend_expect = update(APPEND_EXTEND[0], EXPECT_SEQ, APPEND_EXTEND[2])
        # What settles a write in doubt (store/settle.py): the session's lease and
        # send state, and the last message seq of a send.
        self.lease_state = r(
            "SELECT lease_epoch, lease_expires_at, send_count, next_seq, system_prompt, "
            f"incarnation, metadata, lease_owner, pending_send FROM {s} WHERE id = ?")
        self.send_last_seq = r(
            f"SELECT MAX(seq) FROM {m} WHERE session_id = ? AND send_index = ?")
        self.insert_message = r(
            f"INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, {now})")
        self.read_messages = r(
            f"SELECT {MESSAGE_COLUMNS} FROM {m} WHERE session_id = ? AND seq >= ? "
            "ORDER BY seq")
        self.read_messages_limit = r(
            f"SELECT {MESSAGE_COLUMNS} FROM {m} WHERE session_id = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?")
        self.read_bodies_range = r(
            f"SELECT CASE WHEN send_index < 0 OR send_index >= {ASSISTANT_KEY} THEN NULL "
            "WHEN role = 'user' THEN send_index "
            f"WHEN role = 'assistant' THEN send_index + {ASSISTANT_KEY} "
            f"WHEN role = 'tool' THEN -1 - send_index END, body FROM {m} "
            "WHERE session_id = ? AND seq >= ? AND seq < ? ORDER BY seq")
        # -- leases
        self.acquire = update(
            "lease_epoch = CASE WHEN lease_owner = ? THEN lease_epoch ELSE lease_epoch + 1 END, "
            "lease_owner = ?, lease_expires_at = {now} + ?",
            " AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < {now})",
            "lease_epoch, lease_expires_at")
        self.claim = update(_TAKE_LEASE, _LEASE_FREE,
                            "lease_epoch, lease_expires_at, pending_send, next_seq, "
                            "system_prompt, incarnation, metadata")
        self.renew = update("lease_expires_at = {now} + ?", " AND lease_owner = ?",
                            "lease_expires_at")
        self.touch = update("next_seq = next_seq", "", "next_seq")
        self.release = r(
            f"UPDATE {s} SET {_RELEASE} WHERE id = ? AND lease_owner = ? AND lease_epoch = ?")
        self.release_owner = r(f"UPDATE {s} SET {_RELEASE} WHERE id = ? AND lease_owner = ?")
        # -- sends
        self.start_send = update(
            "pending_send = send_count, send_count = send_count + 1, next_seq = next_seq + ?",
            " AND pending_send IS NULL", "send_count, next_seq")
        self.begin_send = update(*BEGIN_SEND)
        self.finish_send = update(*FINISH_SEND)
        self.finish_send_release = update(*FINISH_SEND_RELEASE)
        self.pause_send = update(
            f"next_seq = next_seq + ?, {_RELEASE}", " AND pending_send = ?", "next_seq")
        self.insert_send = r(
            f"INSERT INTO {sd} ({SEND_COLUMNS}) "
            "VALUES (?, ?, 'pending', ?, ?, ?, {now}, NULL, NULL, 0, '{}', NULL)")
        self.end_send = r(
            f"UPDATE {sd} SET status = ?, finished_at = {{now}}, stop_reason = ?, rounds = ?, "
            "token_usage = ?, error = ? WHERE session_id = ? AND send_index = ?")
        self.send_error = r(
            f"UPDATE {sd} SET error = ? WHERE session_id = ? AND send_index = ?")
        self.get_send = r(
            f"SELECT {SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND send_index = ?")
        self.send_by_key = r(
            f"SELECT {SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND request_key = ?")
        self.list_sends = r(
            f"SELECT {SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND send_index >= ? "
            "ORDER BY send_index")
        # -- maintenance
        self.prune_candidates = r(
            f"SELECT id FROM {s} WHERE updated_at < ? "
            "AND (lease_owner IS NULL OR lease_expires_at < {now}) "
            "ORDER BY updated_at LIMIT ?" + d.for_update(skip_locked=d.supports_skip_locked))


def session_from_row(row: Row) -> SessionRecord:
    return SessionRecord(
        id=row[0], parent_id=row[1], created_at=from_us(row[2]), updated_at=from_us(row[3]),
        system_prompt=load_json(row[4]), metadata=load_json(row[5]), next_seq=int(row[6]),
        send_count=int(row[7]), pending_send=None if row[8] is None else int(row[8]),
        lease_owner=row[9], lease_epoch=int(row[10]),
        lease_expires_at=None if row[11] is None else from_us(row[11]), incarnation=row[12],
        resume_attempts=int(row[13]), parked_at=None if row[14] is None else from_us(row[14]))


def message_from_row(session_id: str, row: Row) -> MessageRecord:
    return MessageRecord(session_id=session_id, seq=int(row[0]), send_index=int(row[1]),
                         role=row[2], body=load_json(row[3]), created_at=from_us(row[4]))


def send_from_row(row: Row) -> SendRecord:
    return SendRecord(
        session_id=row[0], send_index=int(row[1]), status=row[2], source=row[3],
        request_key=row[4], first_seq=int(row[5]), created_at=from_us(row[6]),
        finished_at=None if row[7] is None else from_us(row[7]), stop_reason=row[8],
        rounds=int(row[9]), usage=load_json(row[10]),
        error=None if row[11] is None else load_json(row[11]))


async def fetch(conn: Any, sql: str, args: Any) -> list[Row]:
    """A query as a store transaction body."""
    rows: list[Row] = await conn.fetch(sql, args)
    return rows


async def fetchone(conn: Any, sql: str, args: Any) -> Row | None:
    """A one-row query as a store transaction body."""
    row: Row | None = await conn.fetchone(sql, args)
    return row
