"""Retries that are honest about what they know, proven with faults at the port.

Each write is failed at BEGIN, at a COMMIT that did not land, and at one that landed
but lost its answer, on every backend: nothing is duplicated or lost, and the caller
sees success (a verifiable write, settled by reading) or a typed in-doubt error (a
write with no check, never replayed)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from conformance.waiting import eventually
from power_loop import (
    CommitInDoubtError,
    SeqConflictError,
    Store,
    TransientStoreError,
    open_store,
)
from power_loop.store import Connection, NewMessage
from tests.store_faults.port_faults import Fault, FaultyDatabase

FAULTS = [Fault.BEGIN, Fault.COMMIT_LOST, Fault.COMMIT_LANDED]


def said(*texts: str, send_index: int = 0) -> list[NewMessage]:
    return [NewMessage(send_index, "user", {"text": t}) for t in texts]


@pytest.fixture
async def faulty(store: Store) -> AsyncIterator[tuple[Store, FaultyDatabase]]:
    """The test's store, seen through a port that fails where the test says."""
    db = FaultyDatabase(store._database)
    yield Store(db, store.table_prefix), db


async def texts(store: Store, session_id: str) -> list[tuple[int, str]]:
    return [(m.seq, m.body["text"]) for m in await store.read_messages(session_id)]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.value)
async def test_an_append_with_its_expected_seq_lands_once(
        store: Store, faulty: tuple[Store, FaultyDatabase], fault: Fault) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    await store.append_messages(sid, said("first"))
    db.plan = [fault]
    assert await through.append_messages(sid, said("a", "b"), expect_seq=1) == [1, 2]
    assert db.injected == [fault]
    assert await texts(store, sid) == [(0, "first"), (1, "a"), (2, "b")]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.value)
async def test_a_send_begun_and_closed_through_faults_is_written_once(
        store: Store, faulty: tuple[Store, FaultyDatabase], fault: Fault) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    db.plan = [fault]
    start = await through.begin_send(sid, said("hi"), owner="send-1", ttl=30)
    assert start.lease is not None and start.send_index == 0 and start.first_seq == 0
    session = await store.get_session(sid)
    assert (session.lease_owner, session.lease_epoch, session.pending_send) \
        == ("send-1", start.lease.epoch, 0)

    db.plan = [fault]
    first = await through.close_send(
        sid, 0, said("bye", send_index=0), lease=start.lease, status="done",
        stop_reason="end_turn", rounds=1, usage={})
    assert first == 1
    assert db.injected == [fault, fault]
    assert await texts(store, sid) == [(0, "hi"), (1, "bye")]
    send = await store.get_send(sid, 0)
    session = await store.get_session(sid)
    assert send.status == "done" and session.pending_send is None
    assert session.lease_owner is None


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.value)
async def test_a_claim_and_a_finish_through_faults_take_effect_once(
        store: Store, faulty: tuple[Store, FaultyDatabase], fault: Fault) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, said("hi"), owner="crashed", ttl=30)
    assert start.lease is not None
    await store.release_lease(start.lease)

    db.plan = [fault]
    claim = await through.claim_session(sid, owner="worker-1", ttl=30)
    assert claim.pending_send == 0 and claim.next_seq == 1
    assert claim.lease.epoch == start.lease.epoch + 1
    assert (await store.get_session(sid)).lease_owner == "worker-1"

    db.plan = [fault]
    record = await through.finish_send(sid, 0, said("done", send_index=0),
                                       status="aborted", release=claim.lease)
    assert record.status == "aborted"
    assert db.injected == [fault, fault]
    assert await texts(store, sid) == [(0, "hi"), (1, "done")]
    assert (await store.get_session(sid)).lease_owner is None


async def test_a_write_with_no_check_is_never_replayed(
        store: Store, faulty: tuple[Store, FaultyDatabase]) -> None:
    through, db = faulty
    db.plan = [Fault.COMMIT_LANDED]
    with pytest.raises(CommitInDoubtError) as landed:
        await through.create_session("landed")
    assert landed.value.code == "commit_in_doubt"
    assert (landed.value.operation, landed.value.resolution) \
        == ("create_session", "unverifiable")
    assert "may or may not have landed" in landed.value.message
    assert (await store.get_session("landed")).id == "landed"  # it did, once

    sid = (await store.create_session()).id
    db.plan = [Fault.COMMIT_LANDED]
    with pytest.raises(CommitInDoubtError):
        await through.append_messages(sid, said("once"))  # no expect_seq: no check
    assert await texts(store, sid) == [(0, "once")]


@pytest.mark.parametrize("fault", [Fault.BEGIN, Fault.COMMIT_LOST], ids=lambda f: f.value)
async def test_a_write_that_certainly_failed_runs_again(
        store: Store, faulty: tuple[Store, FaultyDatabase], fault: Fault) -> None:
    through, db = faulty
    if fault is Fault.COMMIT_LOST:
        # A lost COMMIT is in doubt to the store: only BEGIN is certain for a plain
        # write, which then runs again on another connection.
        db.plan = [fault]
        with pytest.raises(CommitInDoubtError):
            await through.create_session("maybe")
        with pytest.raises(Exception, match="does not exist"):
            await store.get_session("maybe")
        return
    db.plan = [fault, fault]
    created = await through.create_session("again")
    assert created.id == "again" and db.attempts == 3


async def test_reads_run_again_through_a_lost_connection(
        store: Store, faulty: tuple[Store, FaultyDatabase]) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    db.reads = [Fault.BEGIN, Fault.BEGIN]
    assert (await through.get_session(sid)).id == sid
    assert db.injected == [Fault.BEGIN, Fault.BEGIN]


async def test_an_append_at_a_seq_that_moved_writes_nothing(store: Store) -> None:
    sid = (await store.create_session()).id
    await store.append_messages(sid, said("one"), expect_seq=0)
    with pytest.raises(SeqConflictError) as caught:
        await store.append_messages(sid, said("two"), expect_seq=0)
    assert (caught.value.code, caught.value.expected, caught.value.actual) \
        == ("seq_conflict", 0, 1)
    assert await texts(store, sid) == [(0, "one")]


async def _own_backend_id(store: Store) -> int:
    sql = ("SELECT pg_backend_pid()" if store.backend == "postgresql"
           else "SELECT CONNECTION_ID()")

    async def read(conn: Connection) -> int:
        row = await conn.fetchone(sql)
        assert row is not None
        return int(row[0])

    return await store._read(read)


@pytest.mark.backends("postgresql", "mysql")
async def test_a_terminated_pooled_connection_is_replaced(
        store: Store, open_more: Callable[..., Awaitable[Store]]) -> None:
    sid = (await store.create_session()).id
    single = await open_more(pool_min_size=1, pool_max_size=1)
    other = await open_more()
    victim = await _own_backend_id(single)
    kill = ("SELECT pg_terminate_backend(?)" if store.backend == "postgresql"
            else "KILL CONNECTION ?")

    async def terminate(conn: Connection) -> None:
        await conn.execute(single._database.dialect.render(kill), [victim])

    await other._write(terminate)
    assert (await single.get_session(sid)).id == sid  # a read, on a fresh connection
    assert await _own_backend_id(single) != victim
    victim = await _own_backend_id(single)
    await other._write(terminate)
    assert await single.append_messages(sid, said("after"), expect_seq=0) == [0]
    assert await texts(store, sid) == [(0, "after")]


@pytest.mark.backends("sqlite")  # busy_timeout is SQLite's: servers wait on row locks
async def test_the_busy_timeout_is_one_budget_for_the_whole_operation(
        store: Store, dsn: str) -> None:
    path = dsn.removeprefix("sqlite:///")
    sid = (await store.create_session()).id
    short = await open_store(path, table_prefix=store.table_prefix, busy_timeout=0.3)
    db = FaultyDatabase(short._database)
    through = Store(db, store.table_prefix)
    holder = sqlite3.connect(path)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientStoreError):
            await through.append_messages(sid, said("blocked"))
        # One attempt: it waited out the whole budget; none more were started.
        assert db.attempts == 1
    finally:
        holder.rollback()
        holder.close()
        await short.aclose()
    assert await texts(store, sid) == []


async def test_stranded_claims_in_doubt_give_their_leases_back(
        store: Store, faulty: tuple[Store, FaultyDatabase]) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, said("hi"), owner="crashed", ttl=30)
    assert start.lease is not None
    await store.release_lease(start.lease)  # stranded: pending, nobody holds it
    db.plan = [Fault.COMMIT_LANDED]
    with pytest.raises(CommitInDoubtError) as caught:
        await through.claim_stranded_sessions("w", ttl=30, limit=5, max_attempts=5)
    assert caught.value.operation == "claim_stranded_sessions"
    assert (await store.get_session(sid)).lease_owner is None  # given back
    claims, _ = await store.claim_stranded_sessions("w", ttl=30, limit=5, max_attempts=5)
    assert [c.lease.session_id for c in claims] == [sid]


async def test_timer_claims_in_doubt_are_given_back(
        store: Store, faulty: tuple[Store, FaultyDatabase]) -> None:
    through, db = faulty
    sid = (await store.create_session()).id
    timer = await store.schedule_timer(sid, "wake up", delay=0.001)

    async def due() -> bool:
        left = await store.next_timer_due()
        return left is not None and left < 0

    await eventually(due, "the timer to be due (database clock)")
    db.plan = [Fault.COMMIT_LANDED]
    with pytest.raises(CommitInDoubtError) as caught:
        await through.claim_due_timers("w", ttl=30, limit=5)
    assert caught.value.operation == "claim_due_timers"
    record = await store.get_timer(timer.timer_id)
    assert record is not None and record.attempts == 0  # the claim's attempt given back

    async def claimed() -> bool:
        return bool(await store.claim_due_timers("v", ttl=30, limit=5))

    await eventually(claimed, "the given-back timer to be claimed by another worker")
    record = await store.get_timer(timer.timer_id)
    assert record is not None and record.claim_owner == "v"
