"""A worker whose clock runs five minutes ahead fires nothing early and steals nothing.

The worker runs under libfaketime (``LD_PRELOAD``, ``FAKETIME=+5m``): every wall-clock
read in its process (``time.time()``, ``datetime.now()``) is five minutes ahead, which
the test checks from the clock the app records at start. Due times, claim expiries and
lease expiries are decided by the database server's clock, so the worker must

* fire a timer due in a few seconds when it falls due, not before (the fire's send is
  created at or after ``due_at``, both on the database clock), once;
* leave alone the timers due 20 seconds to 4.5 minutes later, which its own clock sees
  as overdue;
* fire a recurring timer (every 100 s) once, and not again for the next slot that its
  clock sees as passed;
* leave a due timer claimed by another (live) worker, and a session whose pending send
  is held by another live process, to their holders: by its clock both claims lapsed.

On SQLite there is no server: the clock is that of the machine holding the file, which
every process using the file shares, so a clock faked inside one process is out of its
reach (docs/workers.md says so). The property is tested where it exists.
"""

from __future__ import annotations

import glob
import time
from datetime import timedelta
from pathlib import Path

import pytest

from power_loop import Message, NewMessage
from power_loop.llm.messages import encode_message
from tests.durability.harness import StoreView
from tests.workers.conftest import StartWorker
from tests.workers.support import check_settled, events, read_record, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.backends("postgresql", "mysql")]

AHEAD = 300.0
FAR = (20.0, 60.0, 150.0, 270.0)
"""Delays of timers that must not fire during the test (all less than AHEAD)."""
WAIT = 60.0


def libfaketime() -> str:
    """The libfaketime shared object (``apt install faketime``); fails, never skips."""
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    pytest.fail("libfaketime is not installed: `apt-get install faketime` (scripts/test "
                "installs it)", pytrace=False)


def test_a_worker_five_minutes_ahead_fires_nothing_early(
        backend: str, view: StoreView, start_worker: StartWorker, record_path: Path) -> None:
    store = view.store
    sessions = [view.new_session() for _ in range(4)]
    soon = view.run(store.schedule_timer(sessions[0], "due soon", delay=4))
    recurring = view.run(store.schedule_timer(sessions[1], "every 100 s", delay=2,
                                              every=100))
    far = [view.run(store.schedule_timer(sessions[2], f"not yet {d:g}", delay=d))
           for d in FAR]
    # A due timer claimed by a live worker, and a pending send held by a live process.
    held_timer = view.run(store.schedule_timer(sessions[2], "claimed elsewhere", delay=0))
    (claim,) = view.run(store.claim_due_timers("live-worker", ttl=120, limit=1))
    assert claim.timer.timer_id == held_timer.timer_id
    busy = sessions[3]
    view.run(store.begin_send(busy, [NewMessage(0, "user", encode_message(
        Message.user("held by a live process")))], owner="live-process", ttl=120))
    lease_before = view.session(busy)

    started = time.time()
    worker = start_worker("ahead", env={
        "LD_PRELOAD": libfaketime(), "FAKETIME": f"+{AHEAD:g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1"}, poll=0.2)
    wait_until(lambda: any(e.get("kind") == "start" for e in read_record(record_path)),
               "the worker to start", WAIT)
    (start,) = [e for e in read_record(record_path) if e.get("kind") == "start"]
    skew = start["wall"] - started
    assert AHEAD - 30 < skew < AHEAD + 30, f"the worker's clock is {skew:.0f}s off, not +5 min"

    def fired(timer_id: str, count: int) -> bool:
        timer = view.run(store.get_timer(timer_id))
        return bool(timer.fire_count >= count)

    wait_until(lambda: fired(soon.timer_id, 1) and fired(recurring.timer_id, 1),
               "the due timers to fire", WAIT, interval=0.1)
    wait_until(lambda: all(view.session(s).pending_send is None for s in sessions[:2]),
               "their sends to finish", WAIT)
    # A control due two seconds on (database clock): by the time it has fired, the worker
    # has polled ten more times, each a chance to go wrong.
    control = view.run(store.schedule_timer(view.new_session(), "control", delay=2))
    wait_until(lambda: fired(control.timer_id, 1)
               and view.session(control.session_id).pending_send is None,
               "the control timer to fire", WAIT)
    assert worker.terminate() == 0, worker.log()

    # Due timers fired when due on the database clock, once each.
    for timer, text in ((soon, "due soon"), (recurring, "every 100 s"), (control, "control")):
        snap = view.snapshot(timer.session_id)
        check_settled(snap)
        assert len(snap.sends) == 1, f"{text} fired {len(snap.sends)} times: {snap.sends}"
        (send,) = snap.sends
        assert send.request_key == f"timer:{timer.timer_id}:0"
        assert send.created_at >= timer.due_at, f"{text} fired early: {send} for {timer}"
        assert [m.body["parts"][0]["text"] for m in snap.messages] == [text, "ack: " + text]
    after = view.run(store.get_timer(recurring.timer_id))
    assert (after.status, after.fire_count) == ("scheduled", 1)
    assert after.due_at == recurring.due_at + timedelta(seconds=100)

    # Nothing that is not due yet on the database clock was touched.
    for timer in far:
        now = view.run(store.get_timer(timer.timer_id))
        assert (now.status, now.fire_count, now.attempts, now.claim_owner) == (
            "scheduled", 0, 0, None), f"{now} was claimed by a worker ahead of time"
    assert view.run(store.list_sends(sessions[2])) == []

    # Nor what live holders have claimed.
    still = view.run(store.get_timer(held_timer.timer_id))
    assert (still.claim_owner, still.claim_epoch, still.fire_count) == (
        "live-worker", claim.timer.claim_epoch, 0)
    lease_after = view.session(busy)
    assert (lease_after.lease_owner, lease_after.lease_epoch, lease_after.pending_send) == (
        "live-process", lease_before.lease_epoch, 0)

    claimed = {(e["what"], e["key"]) for e in events(read_record(record_path),
                                                     "WorkerClaimed")}
    assert claimed == {("timer", f"{soon.timer_id}#0"), ("timer", f"{recurring.timer_id}#0"),
                       ("timer", f"{control.timer_id}#0")}
