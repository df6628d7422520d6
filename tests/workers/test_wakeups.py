"""New timers wake sleeping workers: from any process on PostgreSQL (``LISTEN``/
``NOTIFY``), from the worker's own store object on every engine.

The workers here poll once a minute, so a timer fired within the test's bound was
brought forward by a notification, not found by a poll. Timers scheduled by other
processes on SQLite and MySQL are found by polling, which the other worker tests cover.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from conformance.waiting import eventually
from power_loop import Store
from power_loop.events import TimerFired
from tests.workers.inproc import Agent, Events, answers, running, worker

OpenMore = Callable[..., Awaitable[Store]]
SLEEPY = 60.0
"""The workers' poll interval: longer than any test here waits."""


async def listeners(store: Store) -> list[int]:
    """Server pids of the connections listening for this store's timers."""
    async with store._database.transaction(write=False) as conn:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = "
            "'power_loop listener' AND query = $1", [f'LISTEN "{store._timer_channel}"'])
    return [int(row[0]) for row in rows]


async def test_listeners_hear_this_store_everywhere_and_others_on_postgresql(
        store: Store, open_more: OpenMore, backend: str) -> None:
    heard: list[float] = []
    listener = await store.listen_for_timers(heard.append)
    assert listener.alive()
    other = await open_more()  # another process's store
    try:
        sid = (await store.create_session()).id
        await store.schedule_timer(sid, "soon", delay=0)
        await store.schedule_timer(sid, "later", delay=3600)
        await eventually(lambda: _true(len(heard) == 2), "two notifications")
        assert heard[0] <= 0.5 and 3590 < heard[1] <= 3600
        await other.schedule_timer(sid, "from elsewhere", delay=60)
        if backend == "postgresql":
            await eventually(lambda: _true(len(heard) == 3), "the other process's timer")
            assert 50 < heard[2] <= 60
        else:  # no notifications between processes: workers elsewhere poll
            # This store's next timer is heard; the other process's, before it, was not.
            await store.schedule_timer(sid, "from here", delay=7200)
            await eventually(lambda: _true(len(heard) == 3), "this store's next timer")
            assert 7190 < heard[2] <= 7200
    finally:
        await listener.close()
    still: list[float] = []  # a listener left open hears what the closed one would have
    control = await store.listen_for_timers(still.append)
    try:
        await store.schedule_timer(sid, "unheard", delay=0)
        await eventually(lambda: _true(len(still) == 1), "the open listener to hear it")
    finally:
        await control.close()
    assert len(heard) == 3, "a closed listener still heard a timer"


async def test_a_timer_scheduled_in_the_workers_process_wakes_it(store: Store) -> None:
    """The application and its worker share a store object: no poll to wait for, on
    every engine."""
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    work = worker(store, loop, poll_interval=SLEEPY, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(work.stats.polls)), "the first poll")
        await loop.schedule(sid, "tomorrow", delay=86_400)
        await loop.schedule(sid, "now, please", delay=0)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the timer fired",
                         within=SLEEPY / 2)
        # Heard in order: the far timer, before the one that woke it, did not wake it.
        assert work.stats.wakeups == 1, "a far timer woke it"
    assert await answers(store, sid) == ["ack: now, please"]


@pytest.mark.backends("postgresql")
async def test_a_new_timer_wakes_a_sleeping_worker(store: Store, open_more: OpenMore) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    app = await open_more()  # the application scheduling, as another process would
    work = worker(store, loop, poll_interval=SLEEPY, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(work.stats.polls)), "the first poll")
        far = await app.schedule_timer(sid, "tomorrow", delay=86_400)
        await app.schedule_timer(sid, "now, please", delay=0)
        await eventually(lambda: _true(len(seen.of(TimerFired)) == 1), "the timer fired",
                         within=SLEEPY / 2)
        # Notified in commit order: the far timer, before the one that woke it, did not.
        assert work.stats.wakeups == 1, "a far timer woke it"
        await eventually(lambda: _idle(store, sid), "its send to finish")
        # Polls: the first, the one woken for the timer, the one after its send ended.
        # Then it is asleep again, till the far timer or the next poll.
        await eventually(lambda: _true(work.stats.polls >= 3), "the poll after the send")
        soon = await app.schedule_timer(sid, "in a moment", delay=0.5)
        await eventually(lambda: _true(len(seen.of(TimerFired)) == 2), "the next one",
                         within=SLEEPY / 2)
        assert work.stats.wakeups == 2
    assert await answers(store, sid) == ["ack: now, please", "ack: in a moment"]
    fired = await store.get_timer(soon.timer_id)
    assert fired is not None and fired.status == "done"
    send = (await store.list_sends(sid))[-1]
    assert send.created_at >= soon.due_at  # woken early, it still waited for the due time
    untouched = await store.get_timer(far.timer_id)
    assert untouched is not None and untouched.fire_count == 0


async def test_unparking_or_handing_back_a_timer_wakes_workers(store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    parked = await store.schedule_timer(sid, "parked", delay=0)
    handed = await store.schedule_timer(sid, "handed back", delay=0)
    first, second = await store.claim_due_timers("another-worker", ttl=600, limit=2)
    assert await store.park_timer(first, {"reason": "test"})
    work = worker(store, loop, poll_interval=SLEEPY, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(work.stats.polls)), "the first poll")
        # A timer due now wakes it and fires: the parked and the claimed one, due as
        # long, were left alone by those polls.
        control = await store.schedule_timer(sid, "control", delay=0)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the control timer",
                         within=SLEEPY / 2)
        await eventually(lambda: _idle(store, sid), "its send to finish")
        assert [e.timer_id for e in seen.of(TimerFired)] == [control.timer_id]
        assert await store.unpark_timer(parked.timer_id)
        await eventually(lambda: _true(len(seen.of(TimerFired)) == 2), "the unparked one",
                         within=SLEEPY / 2)
        assert await store.release_timer_claim(second)
        await eventually(lambda: _true(len(seen.of(TimerFired)) == 3), "the handed back one",
                         within=SLEEPY / 2)
    assert [e.timer_id for e in seen.of(TimerFired)] == [
        control.timer_id, parked.timer_id, handed.timer_id]


@pytest.mark.backends("postgresql")
async def test_a_lost_subscription_is_taken_out_again(store: Store,
                                                      open_more: OpenMore) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    admin = await open_more()
    work = worker(store, loop, poll_interval=SLEEPY, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(work.stats.polls)), "the first poll")
        (pid,) = await listeners(admin)
        async with admin._database.transaction() as conn:
            await conn.fetch("SELECT pg_terminate_backend($1)", [pid])

        async def subscribed_again() -> bool:
            now = await listeners(admin)
            return len(now) == 1 and now[0] != pid

        await eventually(subscribed_again, "a new subscription", within=SLEEPY / 2)
        await admin.schedule_timer(sid, "after the outage", delay=0)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the timer fired",
                         within=SLEEPY / 2)
    await eventually(lambda: _empty(listeners(admin)), "the subscription closed with the "
                     "worker")
    assert await answers(store, sid) == ["ack: after the outage"]


async def _true(value: bool) -> bool:
    return value


async def _empty(pids: Awaitable[list[int]]) -> bool:
    return not await pids


async def _idle(store: Store, session_id: str) -> bool:
    return (await store.get_session(session_id)).pending_send is None
