"""SIGKILL around an approval: the approved tool runs once, whoever continues the send.

A first process sends; the model calls ``gated_tool``, which needs approval, and the
send stops waiting. A second process approves and is killed at a crash point. A third
resumes the send. Whatever the point, the tool's effect happens at most once and, if
the kill came before the tool started, exactly once, in the resumer. The wait says
what is known: ``executing`` for a call cut off mid-call (its outcome is unknown),
``done`` once a result is stored with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from power_loop.store.waits import waits_of
from tests.durability.child import DONE_PREFIX, EXIT_OK, GATED_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import StoreView, read_effects, starts, wait_until

pytestmark = pytest.mark.slow

CRASH_TTL = 1.0


def _waiting_call(view: StoreView, sid: str) -> str:
    (wait,) = view.run(waits_of(view.store).waiting(sid))
    assert (wait.kind, wait.tool_name, wait.status) == ("approval", GATED_TOOL, "waiting")
    return str(wait.wait_id)


@pytest.mark.parametrize("crash_at", ["after_decision", "after_tool_ran",
                                      "after_results_saved"])
def test_a_kill_after_the_approval_runs_the_tool_once(backend: str, view: StoreView,
                                                      spawn: Spawn, effects: Path,
                                                      crash_at: str) -> None:
    sid = view.new_session()
    asker = spawn("asker", sid, [{"op": "send", "text": "first"}], tool=GATED_TOOL)
    report = asker.expect_exit(EXIT_OK)
    (asked,) = report["results"]
    assert (asked["status"], asked["stop_reason"]) == ("waiting", "awaiting_approval")
    call_id = _waiting_call(view, sid)
    assert asked["waiting"] == [call_id]
    assert starts(read_effects(effects)) == []

    approver = spawn("approver", sid, [{"op": "approve", "call_id": call_id}],
                     tool=GATED_TOOL, crash_at=crash_at, lease_ttl=CRASH_TTL)
    approver.expect_killed()
    (decided,) = view.run(waits_of(view.store).of_send_index(sid, 0))
    # Killed between the start and the result: started, outcome unknown. Killed after
    # the result's commit: the same commit made the call done.
    assert decided.status == {"after_decision": "approved", "after_tool_ran": "executing",
                              "after_results_saved": "done"}[crash_at]
    assert view.run(waits_of(view.store).waiting(sid)) == []
    ran_by_crash = starts(read_effects(effects), pid=approver.pid)
    assert len(ran_by_crash) == (crash_at != "after_decision")

    wait_until(lambda: view.lease_lapsed(sid), "the dead approver's lease to lapse")
    resumer = spawn("resumer", sid, [{"op": "resume"}], tool=GATED_TOOL)
    report = resumer.expect_exit(EXIT_OK)
    (resumed,) = report["results"]
    assert resumed["status"] == "done"
    runs = starts(read_effects(effects), tool=GATED_TOOL)
    assert len(runs) == 1, runs
    snap = view.snapshot(sid)
    snap.check_consistent()
    (result,) = snap.messages[2].body["parts"]
    (after,) = view.run(waits_of(view.store).of_send_index(sid, 0))
    if crash_at == "after_decision":
        assert runs[0]["pid"] == resumer.pid and runs[0]["attempt"] == 1
        assert result["content"] == f"{GATED_TOOL}(first) attempt 1"
        assert after.status == "done"
    elif crash_at == "after_results_saved":  # ran and stored by the dead approver
        assert runs[0]["pid"] == approver.pid
        assert result["content"] == f"{GATED_TOOL}(first) attempt 1"
        assert after.status == "done"
    else:  # started by the dead approver: never run again, its outcome unknown
        assert runs[0]["pid"] == approver.pid
        assert result["content"] == UNKNOWN_OUTCOME
        assert after.status == "executing"
    assert resumed["final_text"] == DONE_PREFIX + result["content"]


def test_a_kill_before_the_wait_is_recorded_waits_on_resume(backend: str, view: StoreView,
                                                            spawn: Spawn,
                                                            effects: Path) -> None:
    """Killed after the call is stored, before its wait: resume waits, runs nothing."""
    sid = view.new_session()
    asker = spawn("asker", sid, [{"op": "send", "text": "first"}], tool=GATED_TOOL,
                  crash_at="after_assistant_saved", lease_ttl=CRASH_TTL)
    asker.expect_killed()
    wait_until(lambda: view.lease_lapsed(sid), "the dead asker's lease to lapse")
    resumer = spawn("resumer", sid, [{"op": "resume"}], tool=GATED_TOOL)
    (resumed,) = resumer.expect_exit(EXIT_OK)["results"]
    assert (resumed["status"], resumed["stop_reason"]) == ("waiting", "awaiting_approval")
    call_id = _waiting_call(view, sid)
    approver = spawn("approver", sid, [{"op": "approve", "call_id": call_id}],
                     tool=GATED_TOOL)
    (approved,) = approver.expect_exit(EXIT_OK)["results"]
    assert approved["status"] == "done"
    runs = starts(read_effects(effects), tool=GATED_TOOL)
    assert [(r["pid"], r["attempt"]) for r in runs] == [(approver.pid, 1)]
