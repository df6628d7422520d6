"""SIGTERM to a ``power-loop worker`` process: stop claiming, drain, hand over, exit.

A worker fires a timer whose send runs a slow tool; SIGTERM arrives while the tool runs.

* Within the grace period the send finishes, nothing new is claimed (a timer falling due
  meanwhile stays for the next worker), and the process exits 0.
* When the grace period runs out first, the send is released, not failed: it stays
  pending with its lease free, the process exits 0, and another worker finishes it
  without running the cut-off tool again.
* A second SIGTERM exits at once, releasing the send the same way.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.harness import StoreView
from tests.workers.app import DONE, SLOW
from tests.workers.conftest import StartWorker
from tests.workers.support import WorkerProcess, check_settled, read_record, wait_until

pytestmark = pytest.mark.slow

WAIT = 60.0
TEXT = f"please {SLOW}"


def tool_lines(path: Path, pid: int, event: str) -> list[dict[str, object]]:
    return [e for e in read_record(path) if e.get("kind") == "tool" and e["pid"] == pid
            and e["event"] == event]


def start_slow_send(view: StoreView, start_worker: StartWorker, record_path: Path, *,
                    tool_sleep: float, grace: float) -> tuple[str, str, WorkerProcess]:
    """A worker running a timer's send, inside its slow tool: (session, timer, worker)."""
    sid = view.new_session()
    timer = view.run(view.store.schedule_timer(sid, TEXT, delay=0))
    worker = start_worker("a", env={"PLW_SLOW_SLEEP": str(tool_sleep)}, poll=0.2,
                          options=["--grace", str(grace)])
    wait_until(lambda: bool(tool_lines(record_path, worker.pid, "start")),
               "the slow tool to start", WAIT)
    return sid, timer.timer_id, worker


def released(view: StoreView, sid: str) -> None:
    """The send was handed over: pending, its lease free, its timer's fire recorded."""
    session = view.session(sid)
    assert (session.pending_send, session.lease_owner) == (0, None), session
    assert [s.status for s in view.run(view.store.list_sends(sid))] == ["pending"]


def test_sigterm_lets_the_running_send_finish_and_claims_nothing_new(
        backend: str, view: StoreView, start_worker: StartWorker, record_path: Path) -> None:
    sid, _, worker = start_slow_send(view, start_worker, record_path, tool_sleep=2.0,
                                     grace=30.0)
    worker.signal(signal.SIGTERM)
    later_sid = view.new_session()
    later = view.run(view.store.schedule_timer(later_sid, "due while draining", delay=0))
    assert worker.wait(WAIT) == 0, worker.log()

    snap = view.snapshot(sid)
    check_settled(snap)
    assert snap.messages[-1].body["parts"][0]["text"] == DONE + f"worked on {TEXT}"
    assert len(tool_lines(record_path, worker.pid, "effect")) == 1
    untouched = view.run(view.store.get_timer(later.timer_id))
    assert (untouched.status, untouched.attempts, untouched.claim_owner) == (
        "scheduled", 0, None)
    assert view.run(view.store.list_sends(later_sid)) == []


@pytest.mark.parametrize("how", ["grace_runs_out", "second_sigterm"])
def test_work_still_running_is_released_and_another_worker_finishes_it(
        backend: str, view: StoreView, start_worker: StartWorker, record_path: Path,
        how: str) -> None:
    grace = 0.5 if how == "grace_runs_out" else 600.0
    sid, timer_id, worker = start_slow_send(view, start_worker, record_path,
                                            tool_sleep=600.0, grace=grace)
    worker.signal(signal.SIGTERM)
    if how == "second_sigterm":
        # The send runs on after the first SIGTERM: the worker still renews its lease.
        before = view.session(sid).lease_expires_at
        wait_until(lambda: view.session(sid).lease_expires_at != before,
                   "the send's lease to be renewed after the first SIGTERM", WAIT)
        assert worker.alive(), "the first SIGTERM must let the send run on"
        worker.signal(signal.SIGTERM)
    assert worker.wait(15.0) == 0, worker.log()  # far less than the tool or the grace
    released(view, sid)
    assert view.run(view.store.get_timer(timer_id)).status == "done"  # fire recorded
    assert not tool_lines(record_path, worker.pid, "effect")

    other = start_worker("b", poll=0.2)
    wait_until(lambda: view.session(sid).pending_send is None, "B to finish the send", WAIT)
    assert other.terminate() == 0, other.log()
    snap = view.snapshot(sid)
    check_settled(snap)
    assert snap.messages[-1].body["parts"][0]["text"] == DONE + UNKNOWN_OUTCOME
    assert not tool_lines(record_path, other.pid, "start"), "B ran the cut-off tool again"
    assert [s.request_key for s in snap.sends] == [f"timer:{timer_id}:0"]
