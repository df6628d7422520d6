"""A write cancelled while the server runs it has settled when the cancellation returns.

A one-round-trip append carries its own ``COMMIT``. On MySQL a cancelled statement used
to close the connection and return at once, while the server went on and committed what
it had received: a "zombie" append landing after its writer had handed the session
back. Whoever then read the session (the cancelled run closing its send, a resumer
building its window) appended at a seq that was already taken (``SeqConflictError``).

Here the append waits on the session row's lock (another transaction holds it, and
lets go a moment later: a slow server), is cancelled while it waits, and the session is
read as soon as the cancellation returns; its writer hands the lease back and another
takes it. What was read must still be the truth: the new holder appends at that seq.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from power_loop import Store
from power_loop.store.records import NewMessage

SLOW_SERVER = 0.5
"""Seconds the blocking transaction holds the session row after the append is cut off."""


def _text(text: str) -> NewMessage:
    return NewMessage(0, "assistant", {"v": 1, "parts": [{"kind": "text", "text": text}]})


async def _waiting_on_lock(store: Store) -> bool:
    """Whether a statement on this store's tables runs or waits for a lock (SQLite: a
    writer waits in this process, for the blocking transaction's connection)."""
    if store.backend == "sqlite":
        await asyncio.sleep(0)
        return True
    like = f"%{store.table_prefix}%"
    if store.backend == "postgresql":
        sql = ("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND query LIKE ?")
    else:
        sql = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
               "WHERE INFO LIKE ? AND INFO NOT LIKE '%PROCESSLIST%'")
    async with store._database.autocommit() as conn:
        row = await conn.fetchone(store._database.dialect.render(sql), [like])
    return row is not None and int(row[0]) > 0


@contextlib.asynccontextmanager
async def _row_locked(store: Store, session_id: str) -> AsyncIterator[None]:
    """Hold the session row's lock in a transaction of its own."""
    d = store._database.dialect
    sql = d.render(f"UPDATE {d.quote(store.table_prefix + 'sessions')} "
                   "SET next_seq = next_seq WHERE id = ?")
    async with store._database.transaction() as conn:
        await conn.execute(sql, [session_id])
        yield


@pytest.mark.parametrize("appends", [1, 3])
async def test_a_cancelled_append_has_landed_or_not_when_the_cancellation_returns(
        store: Store, appends: int) -> None:
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, [_text("task")], owner="first", ttl=30)
    assert start.lease is not None
    messages = [_text(f"answer {i}") for i in range(appends)]

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_row_locked(store, sid))
        append = asyncio.create_task(store.append_messages(
            sid, messages, epoch=start.lease.epoch, extend_lease=30, expect_seq=1))
        while not await _waiting_on_lock(store):
            assert not append.done()
        append.cancel()

        async def let_go() -> None:  # the server is slow, then gets on with it
            await asyncio.sleep(SLOW_SERVER)
            await stack.aclose()

        letting_go = asyncio.create_task(let_go())
        with pytest.raises(asyncio.CancelledError):
            await append
        # What the cancelled writer (closing its send) or a resumer reads now.
        session = await store.get_session(sid)
        stored = await store.read_messages(sid)
        await letting_go

    assert session.next_seq in (1, 1 + appends)
    assert [r.seq for r in stored] == list(range(session.next_seq))
    assert await store.release_lease(start.lease)
    claim = await store.claim_session(sid, owner="second", ttl=30)
    assert claim.next_seq == session.next_seq  # nothing landed behind the reader's back
    seqs = await store.append_messages(sid, [_text("resumed")], epoch=claim.lease.epoch,
                                       expect_seq=session.next_seq)
    assert seqs == [session.next_seq]
