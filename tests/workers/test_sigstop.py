"""A worker frozen (SIGSTOP) past its lease loses the send to another worker, and once
woken writes nothing.

Worker A fires a timer whose send blocks, in A only, in a slow tool or a slow model
call. The test freezes A right after one of its lease renewals commits (so A is not
inside a transaction), waits past the lease, and starts worker B: B claims the stranded
session, takes the lease over with a higher epoch and finishes the send (the cut-off
tool call is answered as of unknown outcome, never run again; a model call that never
answered is simply made again). A is then woken with SIGCONT: its renewal finds the
lease taken, its run stops with ``LeaseLostError`` (reported as ``WorkerLostLease``),
the store is byte-for-byte what B left, and A carries on working until SIGTERM.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.harness import StoreView, owner_pid
from tests.workers.app import ACK, DONE, SLOW, SLOW_MODEL
from tests.workers.conftest import StartWorker
from tests.workers.support import check_settled, events, read_record, wait_until

pytestmark = pytest.mark.slow

TTL = 1.5
WAIT = 120.0


def tool_lines(path: Path, pid: int, event: str) -> list[dict[str, object]]:
    return [e for e in read_record(path) if e.get("kind") == "tool" and e["pid"] == pid
            and e["event"] == event]


@pytest.mark.parametrize("frozen_in", ["tool", "model"])
def test_a_frozen_worker_loses_the_send_and_cannot_write_when_woken(
        backend: str, view: StoreView, start_worker: StartWorker, record_path: Path,
        frozen_in: str) -> None:
    sid = view.new_session()
    text = f"please {SLOW}" if frozen_in == "tool" else f"please {SLOW_MODEL}"
    timer = view.run(view.store.schedule_timer(sid, text, delay=0))
    ttl = {"PLW_LEASE_TTL": str(TTL)}
    a = start_worker("a", env={**ttl, "PLW_SLOW_SLEEP": "600"}, poll=30, claim_ttl=TTL)

    def a_is_stuck() -> bool:
        lines = read_record(record_path)
        if frozen_in == "tool":
            return any(e.get("kind") == "tool" and e["pid"] == a.pid for e in lines)
        return any(e.get("kind") == "model" and e["pid"] == a.pid for e in lines)

    wait_until(a_is_stuck, f"A to be in the slow {frozen_in}", WAIT)
    held = view.session(sid)
    assert owner_pid(held.lease_owner) == a.pid and held.pending_send == 0
    epoch_a = held.lease_epoch
    wait_until(lambda: view.session(sid).lease_expires_at != held.lease_expires_at,
               "A to renew its lease", WAIT, interval=0.005)
    a.signal(signal.SIGSTOP)
    frozen = view.snapshot(sid)
    assert [k for _, k in frozen.shapes()] == (["user", "call"] if frozen_in == "tool"
                                               else ["user"])
    fired = view.run(view.store.get_timer(timer.timer_id))
    assert (fired.status, fired.fire_count) == ("done", 1)  # delivered before A froze
    wait_until(lambda: view.lease_lapsed(sid), "A's lease to lapse", WAIT)

    # -- B takes the send over ---------------------------------------------------------
    b = start_worker("b", env=ttl)
    wait_until(lambda: view.session(sid).pending_send is None, "B to finish the send", WAIT)
    taken = view.snapshot(sid)
    check_settled(taken)
    assert taken.session.lease_epoch > epoch_a
    if frozen_in == "tool":
        assert taken.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
        result = taken.messages[2].body
        assert result["meta"].get("synthetic") == "unknown_outcome"
        assert result["parts"][0]["content"] == UNKNOWN_OUTCOME
        final = DONE + UNKNOWN_OUTCOME
    else:
        assert taken.shapes() == [(0, "user"), (0, "text")]
        final = ACK + text
    assert taken.messages[-1].body["parts"][0]["text"] == final  # one final answer
    assert [(s.request_key, s.source) for s in taken.sends] == [
        (f"timer:{timer.timer_id}:0", "timer")]
    assert events(read_record(record_path), "SendStarted", resumed=True)

    # -- A wakes up to a session that is no longer its own ------------------------------
    a.signal(signal.SIGCONT)
    wait_until(lambda: bool([e for e in events(read_record(record_path), "WorkerLostLease")
                             if e["pid"] == a.pid]), "A to notice it lost the lease", WAIT)
    assert a.alive()
    assert view.snapshot(sid) == taken, "A wrote to the store after losing its lease"
    assert not tool_lines(record_path, a.pid, "effect"), "A's cut-off tool went on"
    assert not [e for e in read_record(record_path) if e.get("kind") == "tool"
                and e["pid"] == b.pid], "B ran the cut-off tool again"

    # -- both carry on ---------------------------------------------------------------------
    after = view.run(view.store.schedule_timer(sid, "after the storm", delay=0))

    def after_fired() -> bool:
        current = view.run(view.store.get_timer(after.timer_id))
        return current.status == "done" and view.session(sid).pending_send is None

    wait_until(after_fired, "the next timer to fire", WAIT)
    settled = view.snapshot(sid)
    check_settled(settled)
    assert [m.body["parts"][0]["text"] for m in settled.messages[-2:]] == [
        "after the storm", ACK + "after the storm"]
    assert (a.terminate(), b.terminate()) == (0, 0)
    assert view.snapshot(sid) == settled
