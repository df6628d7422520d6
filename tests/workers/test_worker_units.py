"""What one worker does, in process, on every backend: the library's own ``Worker``
driving a real loop on the test's store, nothing replaced.

Missed-fire policies and schedules, a fire delivered twice recorded once, parking and
unparking, stopping (drain, release, at once), the concurrency bound, and how soon a
timer fires. The tests at the end pin bugs found here (fixed).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from conformance.waiting import eventually, past
from power_loop import InvalidArgumentError, Message, NewMessage, Store
from power_loop.events import (
    SendFinished,
    SendStarted,
    SessionParked,
    TimerFired,
    TimerParked,
    TimerSkipped,
    WorkerClaimed,
    WorkerReleased,
)
from power_loop.llm.messages import encode_message
from power_loop.loop.driver import UNKNOWN_OUTCOME
from power_loop.store.records import SessionClaim
from power_loop.timers import TimerRecord
from power_loop.worker import Worker
from tests.workers.inproc import (
    TOOL,
    Agent,
    Events,
    answers,
    claim_when_free,
    keys,
    running,
    timer_sends,
    user_texts,
    utcnow,
    worker,
)

MINUTE = timedelta(seconds=60)
Stranded = tuple[list[SessionClaim], list[str]]
"""What ``Store.claim_stranded_sessions`` returns: the claims, and the sessions parked."""


def micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


async def strand(store: Store, session_id: str, text: str, *, key: str | None = None,
                 source: str = "user") -> None:
    """Leave a pending send as a process that died right after beginning it would."""
    message = Message.user(text) if source == "user" else Message.user(text, source=source)
    start = await store.begin_send(session_id, [NewMessage(0, "user",
                                                         encode_message(message))],
                                   owner="dead-process", ttl=0.2, source=source,
                                   request_key=key)
    assert start.lease is not None
    await past(store, start.lease.expires_at)  # its lease lapsed


# -- missed fires and schedules ----------------------------------------------------------


async def test_missed_fire_policies(store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    late_once_sid, late_skip_sid, on_time_sid = [await loop.new_session() for _ in range(3)]
    now = utcnow()
    late_once = await store.schedule_timer(late_once_sid, "late, once", every=60,
                                           at=now - timedelta(seconds=150))
    late_skip = await store.schedule_timer(late_skip_sid, "late, skipped", every=60,
                                           at=now - timedelta(seconds=150), missed="skip")
    on_time = await store.schedule_timer(on_time_sid, "on time", every=60,
                                         at=now - timedelta(seconds=30), missed="skip")
    timers = (late_once, late_skip, on_time)

    async def all_moved() -> bool:
        now_ = [await store.get_timer(t.timer_id) for t in timers]
        return all(t is not None and t.due_at > utcnow() and t.claim_owner is None
                   for t in now_)

    async with running(worker(store, loop, on_event=seen)):
        await eventually(all_moved, "the three timers to move past now")

    # fire_once: slots -150 s, -90 s and -30 s were missed: one fire, the rest dropped.
    once = await store.get_timer(late_once.timer_id)
    assert once is not None and once.fire_count == 1
    assert once.due_at == late_once.due_at + 3 * MINUTE
    assert keys(await timer_sends(store, late_once_sid)) == [f"timer:{once.timer_id}:0"]
    (fired,) = [e for e in seen.of(TimerFired) if e.timer_id == once.timer_id]
    assert fired.fire == 0 and fired.lateness >= 149

    # skip: more than a period late, so nothing is sent; the schedule moves on all the same.
    skipped = await store.get_timer(late_skip.timer_id)
    assert skipped is not None and skipped.fire_count == 0
    assert skipped.due_at == late_skip.due_at + 3 * MINUTE
    assert await timer_sends(store, late_skip_sid) == []
    assert await store.read_messages(late_skip_sid) == []
    (skip,) = seen.of(TimerSkipped)
    assert (skip.timer_id, skip.fire) == (skipped.timer_id, 0) and skip.lateness >= 149
    assert not [e for e in seen.of(TimerFired) if e.timer_id == skipped.timer_id]

    # skip, less than a period late: it fires.
    ran = await store.get_timer(on_time.timer_id)
    assert ran is not None and ran.fire_count == 1
    assert ran.due_at == on_time.due_at + MINUTE
    assert keys(await timer_sends(store, on_time_sid)) == [f"timer:{ran.timer_id}:0"]


async def test_advance_moves_to_the_first_slot_after_now(store: Store) -> None:
    sid = (await store.create_session()).id
    timer = await store.schedule_timer(sid, "tick", at=utcnow() - timedelta(seconds=25),
                                       every=10)
    (claim,) = await store.claim_due_timers("w1", ttl=5, limit=10)
    assert claim.timer.timer_id == timer.timer_id and 25 <= claim.lateness < 35
    assert claim.request_key == f"timer:{timer.timer_id}:0"
    moved = await store.advance_timer(claim, fired=True)
    assert moved is not None
    assert moved.due_at == timer.due_at + timedelta(seconds=30)  # slots at -25, -15, -5 s
    assert (moved.status, moved.fire_count, moved.attempts, moved.claim_owner) == (
        "scheduled", 1, 0, None)
    assert await store.advance_timer(claim, fired=True) is None, "a spent claim moved it again"
    assert await store.claim_due_timers("w2", ttl=5, limit=10) == []


async def test_recurring_fires_follow_the_schedule(store: Store) -> None:
    agent = Agent()
    loop = agent.loop(store)
    sid = await loop.new_session()
    every = timedelta(seconds=0.4)
    first = await store.schedule_timer(sid, "tick", delay=0.3, every=every.total_seconds())

    async def four_fires() -> bool:
        timer = await store.get_timer(first.timer_id)
        return timer is not None and timer.fire_count >= 4

    async with running(worker(store, loop)):
        await eventually(four_fires, "four fires")
    timer = await store.get_timer(first.timer_id)
    assert timer is not None
    sends = await timer_sends(store, sid)
    slots, rest = divmod(micros(timer.due_at - first.due_at), micros(every))
    assert rest == 0, f"due_at {timer.due_at} is off the schedule of {first.due_at}"
    assert slots >= timer.fire_count == len(sends)
    assert keys(sends) == [f"timer:{timer.timer_id}:{n}" for n in range(len(sends))]
    for n, send in enumerate(sends):  # fire n never comes before slot n (database clock)
        assert send.created_at >= first.due_at + n * every
        assert send.status == "done"
    assert await user_texts(store, sid) == [("tick", "timer")] * len(sends)


# -- a fire delivered twice is recorded once ----------------------------------------------


async def test_a_fire_delivered_again_after_its_claim_expired_is_recorded_once(
        store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    timer = await store.schedule_timer(sid, "wake up", delay=0)
    (first_claim,) = await store.claim_due_timers("w1", ttl=0.3, limit=1)
    # w1 delivers the fire, then dies before moving the timer on.
    first = await loop.send("wake up", sid, request_key=first_claim.request_key,
                            source="timer")
    again = await claim_when_free(store, "w2", ttl=5)  # once w1's claim lapsed
    assert again.timer.timer_id == timer.timer_id and again.epoch == first_claim.epoch + 1
    assert again.request_key == first_claim.request_key
    assert await store.advance_timer(first_claim, fired=True) is None, "w1's claim is spent"

    result = await loop.fire_timer(again, on_event=seen)
    assert result is not None
    assert (result.send_index, result.final_text) == (first.send_index, first.final_text)
    done = await store.get_timer(timer.timer_id)
    assert done is not None and (done.status, done.fire_count) == ("done", 1)
    assert keys(await store.list_sends(sid)) == [first_claim.request_key]
    assert await user_texts(store, sid) == [("wake up", "timer")]
    assert await answers(store, sid) == ["ack: wake up"]
    assert [e.fire for e in seen.of(TimerFired)] == [0]


async def test_a_fire_whose_first_delivery_died_mid_send_is_finished_once(
        store: Store) -> None:
    agent = Agent()
    loop = agent.loop(store, lease_ttl=1.0)
    sid = await loop.new_session()
    timer = await store.schedule_timer(sid, "wake up", delay=0)
    (first_claim,) = await store.claim_due_timers("w1", ttl=0.3, limit=1)
    # w1 records the message and dies: the send is pending, the timer not moved on.
    await strand(store, sid, "wake up", key=first_claim.request_key, source="timer")

    async def settled() -> bool:
        current = await store.get_timer(timer.timer_id)
        session = await store.get_session(sid)
        return current is not None and current.status == "done" and \
            session.pending_send is None

    async with running(worker(store, loop)):
        await eventually(settled, "the fire to be finished")
    sends = await store.list_sends(sid)
    assert [(s.request_key, s.status) for s in sends] == [(first_claim.request_key, "done")]
    assert await user_texts(store, sid) == [("wake up", "timer")]
    assert await answers(store, sid) == ["ack: wake up"]
    done = await store.get_timer(timer.timer_id)
    assert done is not None and done.fire_count == 1


# -- parking -----------------------------------------------------------------------------


async def test_a_timer_whose_session_is_deleted_is_parked(store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid, other = await loop.new_session(), await loop.new_session()
    await store.claim_session(sid, owner="someone-else", ttl=60)  # the fire waits for it
    timer = await store.schedule_timer(sid, "hello", delay=0)
    work = worker(store, loop, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(seen.of(WorkerClaimed))), "the timer claimed")
        await store.delete_session(sid)
        await eventually(lambda: _true(bool(seen.of(TimerParked))), "the timer parked")
        # The worker carries on with other work.
        await store.schedule_timer(other, "still here", delay=0)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the next timer fired")
    (parked,) = seen.of(TimerParked)
    assert (parked.timer_id, parked.reason) == (timer.timer_id, "session not found")
    assert work.stats.timers_parked == 1
    assert await store.get_timer(timer.timer_id) is None  # deleted with its session
    assert await answers(store, other) == ["ack: still here"]


async def test_a_timer_whose_claims_keep_dying_is_parked_after_max_attempts(
        store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    timer = await store.schedule_timer(sid, "hello", delay=0)
    for _ in range(2):  # two workers died holding it (a poison timer, say)
        await claim_when_free(store, "dead-worker", ttl=0.05)
    work = worker(store, loop, max_attempts=2, on_event=seen)
    async with running(work):
        await eventually(lambda: _true(bool(seen.of(TimerParked))), "the timer parked")
        await more_polls(work)  # a parked timer is left alone
    parked = await store.get_timer(timer.timer_id)
    assert parked is not None
    assert (parked.status, parked.fire_count, parked.claim_owner) == ("parked", 0, None)
    assert parked.attempts == 3 and parked.last_error is not None
    assert await store.list_sends(sid) == []
    assert await store.list_timers(status="parked") == [parked]
    assert await store.cancel_timer(timer.timer_id)  # a parked timer can still be cancelled
    assert not await store.unpark_timer(timer.timer_id)  # cancelled, not parked


async def test_an_unparked_timer_fires_and_keeps_its_last_error_until_then(
        store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    timer = await store.schedule_timer(sid, "hello", delay=0)
    (claim,) = await store.claim_due_timers("a-worker", ttl=30, limit=1)
    assert await store.park_timer(claim, {"reason": "the model was down"})
    assert not await store.renew_timer_claim(claim, ttl=30)  # parking ends the claim
    work = worker(store, loop, on_event=seen)
    async with running(work):
        await more_polls(work)  # a parked timer is not claimed
    assert not seen.of(WorkerClaimed)  # (running() drained any claim's task)
    assert await store.unpark_timer(timer.timer_id)
    unparked = await store.get_timer(timer.timer_id)
    assert unparked is not None
    assert (unparked.status, unparked.attempts, unparked.claim_owner) == (
        "scheduled", 0, None)
    assert unparked.last_error == {"reason": "the model was down"}
    async with running(worker(store, loop, on_event=seen)):
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the timer fired")
    fired = await store.get_timer(timer.timer_id)
    assert fired is not None
    assert (fired.status, fired.fire_count, fired.last_error) == ("done", 1, None)
    assert await answers(store, sid) == ["ack: hello"]
    assert not await store.unpark_timer(timer.timer_id)


async def test_list_timers_filters_by_session_and_status_soonest_first(
        store: Store) -> None:
    a, b = (await store.create_session()).id, (await store.create_session()).id
    late = await store.schedule_timer(a, "late", delay=300)
    soon = await store.schedule_timer(a, "soon", delay=100)
    other = await store.schedule_timer(b, "other", delay=200)
    gone = await store.schedule_timer(b, "gone", delay=50)
    assert await store.cancel_timer(gone.timer_id)

    def ids(timers: list[TimerRecord]) -> list[str]:
        return [t.timer_id for t in timers]

    assert ids(await store.list_timers()) == [gone.timer_id, soon.timer_id,
                                              other.timer_id, late.timer_id]
    assert ids(await store.list_timers(limit=2)) == [gone.timer_id, soon.timer_id]
    assert ids(await store.list_timers(a)) == [soon.timer_id, late.timer_id]
    assert ids(await store.list_timers(a, limit=1)) == [soon.timer_id]
    assert ids(await store.list_timers(status="scheduled")) == [
        soon.timer_id, other.timer_id, late.timer_id]
    assert ids(await store.list_timers(b, status="cancelled")) == [gone.timer_id]
    assert await store.list_timers(a, status="parked") == []
    with pytest.raises(InvalidArgumentError, match="unknown timer status 'paused'") as bad:
        await store.list_timers(status="paused")
    assert bad.value.code == "invalid_argument"
    with pytest.raises(InvalidArgumentError, match="limit"):
        await store.list_timers(limit=0)


async def test_a_timer_of_a_busy_session_waits_for_it_without_failing(store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store, lease_wait=0)  # a busy session fails the fire at once
    sid = await loop.new_session()
    held = await store.claim_session(sid, owner="someone-else", ttl=60)
    timer = await store.schedule_timer(sid, "hello", delay=0)
    async with running(worker(store, loop, max_attempts=2, poll_interval=0.2,
                              on_event=seen)):
        await eventually(lambda: _true(len(seen.of(WorkerReleased)) >= 4), "retries")
        waiting = await store.get_timer(timer.timer_id)
        assert waiting is not None and waiting.status == "scheduled"
        assert waiting.attempts <= 1  # busy is not a failure: never parked for it
        await store.release_lease(held.lease)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the timer fired")
    assert not seen.of(TimerParked)
    assert all("SessionBusyError" in e.reason for e in seen.of(WorkerReleased))
    fired = await store.get_timer(timer.timer_id)
    assert fired is not None and (fired.status, fired.fire_count) == ("done", 1)


async def test_a_session_whose_send_keeps_failing_is_parked_then_unparked(
        store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    agent.failing = True
    with pytest.raises(Exception, match="the model is down"):
        await loop.send("hello", sid)
    assert (await store.get_session(sid)).pending_send == 0

    async def parked() -> bool:
        return (await store.get_session(sid)).parked_at is not None

    work = worker(store, loop, max_attempts=2, on_event=seen)
    async with running(work):
        await eventually(parked, "the session parked")
        await more_polls(work)  # a parked session is left alone
        session = await store.get_session(sid)
        assert (session.pending_send, session.resume_attempts, session.lease_owner) == (
            0, 2, None)
        (event,) = seen.of(SessionParked)
        assert event.session_id == sid
        assert await store.list_parked_sessions() == [session]

        agent.failing = False
        await store.unpark_session(sid)

        async def finished() -> bool:
            return (await store.get_session(sid)).pending_send is None

        await eventually(finished, "the unparked send to finish")
    session = await store.get_session(sid)
    assert (session.parked_at, session.resume_attempts) == (None, 0)
    assert await store.list_parked_sessions() == []
    assert [s.status for s in await store.list_sends(sid)] == ["done"]
    assert await answers(store, sid) == ["ack: hello"]


# -- stopping ----------------------------------------------------------------------------


async def test_stop_stops_claiming_and_lets_running_work_finish(store: Store) -> None:
    agent = Agent(tool_sleep=1.5)
    loop = agent.loop(store)
    sid, later_sid = await loop.new_session(), await loop.new_session()
    await store.schedule_timer(sid, f"{TOOL} first", delay=0)
    work = worker(store, loop, grace_period=30)
    task = asyncio.create_task(work.run())
    await eventually(lambda: _true(agent.running == 1), "the first send's tool to run")
    later = await store.schedule_timer(later_sid, "later", delay=0.3)  # due while draining
    work.request_stop()
    stats = await asyncio.wait_for(task, 30)
    assert stats.timers_fired == 1
    assert await answers(store, sid) == [f"done: worked on {TOOL} first"]
    session = await store.get_session(sid)
    assert (session.pending_send, session.lease_owner) == (None, None)
    untouched = await store.get_timer(later.timer_id)
    assert untouched is not None
    assert (untouched.status, untouched.attempts, untouched.fire_count) == ("scheduled", 0, 0)


async def test_work_left_after_the_grace_period_is_released_not_cancelled(
        store: Store) -> None:
    agent = Agent(tool_sleep=60)
    loop = agent.loop(store)
    sid = await loop.new_session()
    timer = await store.schedule_timer(sid, f"{TOOL} long", delay=0)
    work = worker(store, loop, grace_period=0.3)
    task = asyncio.create_task(work.run())
    await eventually(lambda: _true(agent.running == 1), "the tool to run")
    work.request_stop()
    await asyncio.wait_for(task, 15)
    session = await store.get_session(sid)
    assert (session.pending_send, session.lease_owner) == (0, None)
    assert [s.status for s in await store.list_sends(sid)] == ["pending"]
    fired = await store.get_timer(timer.timer_id)
    assert fired is not None and fired.status == "done"  # its message is recorded

    # Another worker takes the send over; the cut-off tool is not run again.
    agent.tool_sleep = 0
    async with running(worker(store, loop)):
        await eventually(lambda: _idle(store, sid), "the send to be resumed")
    assert [s.status for s in await store.list_sends(sid)] == ["done"]
    assert await answers(store, sid) == ["done: " + UNKNOWN_OUTCOME]
    assert agent.tool_runs == [f"{TOOL} long"]


async def test_a_second_stop_request_exits_at_once(store: Store) -> None:
    agent = Agent(tool_sleep=60)
    go_on = agent.go_on = asyncio.Event()
    loop = agent.loop(store)
    sid = await loop.new_session()
    await store.schedule_timer(sid, f"{TOOL} long", delay=0)
    work = worker(store, loop, grace_period=60)
    task = asyncio.create_task(work.run())
    await eventually(lambda: _true(agent.running == 1), "the tool to run")
    work.request_stop()
    go_on.set()  # a tool the first request had cancelled would never get past this
    await eventually(lambda: _true(agent.went_on == [f"{TOOL} long"]),
                     "the tool to run on after the first stop request")
    assert not task.done(), "the first request must let the work run on"
    work.request_stop()
    await asyncio.wait_for(task, 10)  # far less than the 60 s grace period
    session = await store.get_session(sid)
    assert (session.pending_send, session.lease_owner) == (0, None)
    assert [s.status for s in await store.list_sends(sid)] == ["pending"]


# -- concurrency and promptness ------------------------------------------------------------


async def test_never_more_sends_in_flight_than_the_concurrency(store: Store) -> None:
    agent, seen = Agent(model_delay=0.05, tool_sleep=0.2), Events()
    loop = agent.loop(store)
    sessions = [await loop.new_session() for _ in range(8)]
    timers = [await store.schedule_timer(s, f"{TOOL} {i}", delay=0)
              for i, s in enumerate(sessions)]

    async def all_done() -> bool:
        current = [await store.get_timer(t.timer_id) for t in timers]
        return all(t is not None and t.status == "done" for t in current) and \
            all([await _idle(store, s) for s in sessions])

    async with running(worker(store, loop, concurrency=2, on_event=seen)):
        await eventually(all_done, "every timer fired")
    in_flight = most = 0
    for event in seen.seen:
        if isinstance(event, SendStarted):
            in_flight += 1
        elif isinstance(event, SendFinished):
            in_flight -= 1
        most = max(most, in_flight)
    assert most == 2 and agent.most == 2
    assert len(seen.of(SendFinished)) == 8


async def test_a_timer_due_before_the_next_poll_is_fired_when_due(store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    await store.schedule_timer(sid, "soon", delay=1.0)
    async with running(worker(store, loop, poll_interval=30, on_event=seen)):
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the fire", within=60)
    # The worker slept until the known due time, not for its 30 s poll interval.
    (fired,) = seen.of(TimerFired)
    assert fired.lateness < 10


async def test_a_timer_scheduled_while_the_worker_sleeps_fires_within_a_poll(
        store: Store) -> None:
    poll = 1.5
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    work = worker(store, loop, poll_interval=poll, on_event=seen)
    async with running(work):
        await more_polls(work, 1)  # it polled, found nothing, and sleeps (or is about to)
        await store.schedule_timer(sid, "now", delay=0.1)
        await eventually(lambda: _true(bool(seen.of(TimerFired))), "the fire")
    # Database-clock lateness at the claim; one second of slack for a loaded machine.
    (fired,) = seen.of(TimerFired)
    assert fired.lateness < poll + 1.0


# -- bugs found here, fixed --------------------------------------------------------------


async def test_a_timer_waits_for_its_sessions_stranded_send_rather_than_being_parked(
        store: Store) -> None:
    agent, seen = Agent(), Events()
    loop = agent.loop(store)
    sid = await loop.new_session()
    await strand(store, sid, "interrupted")
    timer = await store.schedule_timer(sid, "wake up", delay=0)

    async def settled() -> bool:
        current = await store.get_timer(timer.timer_id)
        return current is not None and current.status != "scheduled" and \
            await _idle(store, sid)

    async with running(worker(store, loop, concurrency=1, max_attempts=3, on_event=seen)):
        await eventually(settled, "the timer and the stranded send to settle")
    current = await store.get_timer(timer.timer_id)
    assert current is not None and not seen.of(TimerParked)
    assert (current.status, current.fire_count) == ("done", 1)
    assert await user_texts(store, sid) == [("interrupted", None), ("wake up", "timer")]


async def test_the_loops_on_event_sees_each_event_once_in_a_worker(store: Store) -> None:
    agent, hook = Agent(), Events()
    loop = agent.loop(store, on_event=hook)
    sid = await loop.new_session()
    await store.schedule_timer(sid, "hello", delay=0)
    async with running(worker(store, loop)):
        await eventually(lambda: _true(bool(hook.of(SendFinished))), "the send")
    seqs = [e.seq for e in hook.seen]
    assert len(seqs) == len(set(seqs)), [(e.type, e.seq) for e in hook.seen]


async def test_an_idle_worker_does_not_spin_while_a_claimed_timer_waits(store: Store) -> None:
    agent = Agent()
    loop = agent.loop(store)
    sid = await loop.new_session()
    await store.claim_session(sid, owner="someone-else", ttl=60)
    timer = await store.schedule_timer(sid, "hello", delay=0)

    async def claimed() -> bool:
        current = await store.get_timer(timer.timer_id)
        return current is not None and current.claim_owner is not None

    polls = 0
    claim_stranded = store.claim_stranded_sessions

    async def counted(owner_prefix: str, *, ttl: float, limit: int,
                      max_attempts: int) -> Stranded:  # every poll calls it
        nonlocal polls
        polls += 1
        return await claim_stranded(owner_prefix, ttl=ttl, limit=limit,
                                    max_attempts=max_attempts)

    store.claim_stranded_sessions = counted  # type: ignore[method-assign]
    clock = asyncio.get_running_loop().time
    async with running(worker(store, loop, poll_interval=1.0, grace_period=0.5)):
        await eventually(claimed, "the timer claimed")
        before, started = polls, clock()
        await eventually(lambda: _true(polls >= before + 3), "three more polls")
        took = clock() - started
    # Nothing wakes it (no task ends, nothing is scheduled), so two whole poll intervals
    # lie between the first and the third of those polls: a spinning worker takes none.
    # (A loaded machine only makes them longer.)
    assert took >= 1.5, f"the worker polled 3 times in {took:.3f} s while the timer waited"


async def _true(value: bool) -> bool:
    return value


async def more_polls(work: Worker, count: int = 3) -> None:
    """Wait until ``work`` has begun ``count`` more polls: those before the last are over,
    and whatever they claimed has started (a positive control for "left alone")."""
    target = work.stats.polls + count
    await eventually(lambda: _true(work.stats.polls >= target), f"{count} more polls")


async def _idle(store: Store, session_id: str) -> bool:
    session = await store.get_session(session_id)
    return session.pending_send is None and session.lease_owner is None


async def test_a_stop_requested_during_a_poll_is_not_lost(store: Store) -> None:
    """The poll's wake-up flag used to be cleared after the poll, which forgot a stop (or
    a finished task) that came during it: the worker then slept a whole poll interval."""
    agent = Agent()
    loop = agent.loop(store)
    work = worker(store, loop, poll_interval=600)
    claim_stranded = store.claim_stranded_sessions

    async def stop_meanwhile(owner_prefix: str, *, ttl: float, limit: int,
                             max_attempts: int) -> Stranded:
        work.request_stop()
        return await claim_stranded(owner_prefix, ttl=ttl, limit=limit,
                                    max_attempts=max_attempts)

    store.claim_stranded_sessions = stop_meanwhile  # type: ignore[method-assign]
    # Far less than the 600 s poll interval: the stop was seen.
    stats = await asyncio.wait_for(work.run(), 60)
    assert stats.failures == 0
