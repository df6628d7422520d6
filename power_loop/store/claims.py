"""Claims of stranded work: pending sends whose holder died, taken up by workers.

Stranded sends are found on the sessions table alone and claimed as timers are, the
session lease taken in the very statement that counts the attempt; a session that keeps
failing is parked, and left alone until unparked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from power_loop.errors import CommitInDoubtError, InvalidArgumentError, LeaseLostError
from power_loop.store.core import StoreCore, not_found, ttl_us
from power_loop.store.port import Connection, Row
from power_loop.store.records import (
    Lease,
    SessionClaim,
    SessionRecord,
    check_id,
    from_us,
    load_json,
)
from power_loop.store.statements import SESSION_COLUMNS, session_from_row

_SESSION_FREE = "(lease_owner IS NULL OR lease_expires_at < {now})"


class ClaimStatements:
    """The SQL of stranded-send claims and parking, rendered once."""

    def __init__(self, ops: ClaimOps) -> None:
        d, n = ops._database.dialect, ops._names
        r, s = d.render, n.sessions
        lock = d.for_update(skip_locked=d.supports_skip_locked)
        # A send waiting on a person (an approval, an answer) is not stranded.
        waiting = (f"NOT EXISTS (SELECT 1 FROM {n.waits} w WHERE w.session_id = {s}.id AND "
                   f"w.send_index = {s}.pending_send AND w.status = 'waiting')")
        self.stranded = r(
            f"SELECT id, resume_attempts FROM {s} WHERE pending_send IS NOT NULL AND "
            f"parked_at IS NULL AND {_SESSION_FREE} AND {waiting} "
            f"ORDER BY updated_at LIMIT ?{lock}")
        self.park_session = r(f"UPDATE {s} SET parked_at = {{now}}, updated_at = {{now}} "
                              f"WHERE id = ? AND parked_at IS NULL AND {_SESSION_FREE}")
        # A parked session always has its pending send: the pending index serves this.
        self.parked_sessions = r(
            f"SELECT {SESSION_COLUMNS} FROM {s} WHERE pending_send IS NOT NULL AND "
            "parked_at IS NOT NULL ORDER BY parked_at, id LIMIT ?")
        self.unpark_session = r(f"UPDATE {s} SET parked_at = NULL, resume_attempts = 0, "
                                "updated_at = {now} WHERE id = ?")
        self.claim_stranded = ops._sql.update_statement(
            "lease_epoch = lease_epoch + 1, lease_owner = ?, lease_expires_at = {now} + ?, "
            "resume_attempts = resume_attempts + 1",
            f" AND pending_send IS NOT NULL AND parked_at IS NULL AND {_SESSION_FREE} "
            f"AND {waiting}",
            "lease_epoch, lease_expires_at, pending_send, next_seq, system_prompt, "
            "incarnation, metadata")


class ClaimOps(StoreCore):
    """Claims of stranded sends, and parking (mixed into :class:`~power_loop.Store`)."""

    def __init__(self, db: Any, table_prefix: str, *, retries: int = 8) -> None:
        super().__init__(db, table_prefix, retries=retries)
        self._stranded_sql = ClaimStatements(self)

    async def claim_stranded_sessions(self, owner_prefix: str, *, ttl: float, limit: int,
                                      max_attempts: int) -> tuple[list[SessionClaim],
                                                                  list[str]]:
        """Take the lease of sessions whose pending send has no live holder.

        Each claim counts an attempt; a session already at ``max_attempts`` is parked
        instead (returned in the second list) and left alone until unparked.

        A cancellation landing while the claims commit, or a commit in doubt, gives back
        the leases this call took before it is raised (see ``_taking``): the caller
        would not know it holds them.
        """
        taken: list[tuple[str, str]] = []
        try:
            return await self._write(self._claim_stranded_sessions_txn, owner_prefix,
                                     ttl_us(ttl), limit, max_attempts, taken)
        except (asyncio.CancelledError, CommitInDoubtError):
            await self._hand_back([(self._sql.release_owner, [session_id, owner])
                                   for session_id, owner in taken])
            raise

    async def _claim_stranded_sessions_txn(
            self, conn: Connection, owner_prefix: str, ttl: int, limit: int,
            max_attempts: int, taken: list[tuple[str, str]],
    ) -> tuple[list[SessionClaim], list[str]]:
        claims: list[SessionClaim] = []
        parked: list[str] = []
        taken.clear()  # an earlier attempt certainly did not commit
        for session_id, attempts in await conn.fetch(self._stranded_sql.stranded, [limit]):
            if int(attempts) >= max_attempts:
                if await conn.execute(self._stranded_sql.park_session, [session_id]):
                    parked.append(session_id)
                continue
            owner = f"{owner_prefix}:{uuid.uuid4().hex[:12]}"
            try:
                row = await self._update_session(conn, self._stranded_sql.claim_stranded,
                                                 session_id, [owner, ttl], refused=_taken)
            except LeaseLostError:
                continue  # another worker took it between the two statements
            taken.append((session_id, owner))
            lease = Lease(session_id, owner, int(row[0]), from_us(row[1]))
            claims.append(SessionClaim(lease, None if row[2] is None else int(row[2]),
                                       int(row[3]), load_json(row[4]), row[5],
                                       load_json(row[6])))
        return claims, parked

    async def list_parked_sessions(self, *, limit: int = 100) -> list[SessionRecord]:
        """Sessions workers gave up on (``parked_at`` set), the longest parked first."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        rows = await self._read(_all, self._stranded_sql.parked_sessions, [limit])
        return [session_from_row(r) for r in rows]

    async def unpark_session(self, session_id: str) -> None:
        """Let workers take a parked session up again (its attempts start from zero)."""
        if not await self._write(_changed, self._stranded_sql.unpark_session,
                                 [check_id(session_id)]):
            raise not_found(session_id)


def _taken(state: Row) -> LeaseLostError:
    return LeaseLostError("the session was taken by another worker", session_id="",
                          epoch=int(state[0]))


async def _changed(conn: Connection, sql: str, args: Sequence[Any]) -> bool:
    return await conn.execute(sql, args) > 0


async def _all(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)
