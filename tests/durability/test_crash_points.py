"""SIGKILL at every boundary of a send, then a fresh process resumes it and sends again.

The crashing child sends ``first``: the model calls a tool, gets its result and answers
``done: ...``. It dies at one named crash point (``POWER_LOOP_CRASH_AT``), or the test
kills it while the tool runs. Nothing of the dead process survives but the store and the
tool's side-effect log. Then:

* the store holds exactly what was committed before the kill: a pending send whose
  messages are the ones written so far, none lost, none twice, seqs contiguous;
* a fresh process ``resume``\\ s the send: it completes, every request it sends the model
  is the stored history with each tool call answered at once; a call cut off by the
  crash is re-run only if its tool is ``safe_to_repeat``; an unsafe tool gets the
  "outcome is unknown" result instead and is never run a second time;
* another fresh process sends ``second``: the session works as if nothing happened.

No kill here lands after the commit that finishes the send (``in_final_write`` is
before its COMMIT), so a pending send is expected after every one of them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.child import DONE_PREFIX, EXIT_OK, SAFE_TOOL, UNSAFE_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import (
    StoreView,
    assert_requests_sound,
    owner_pid,
    read_effects,
    starts,
    wait_until,
)

pytestmark = pytest.mark.slow

CRASH_TTL = 1.0
"""The crashing child's lease: short, so the resumer waits little for it to expire."""


@dataclass(frozen=True, slots=True)
class Point:
    """A place to die, and what the store must hold afterwards."""

    name: str
    stored: tuple[str, ...]
    """Kinds of the messages committed before the kill."""
    tool_started: bool
    """The crashing process had started the tool (its effect may have happened)."""

    @property
    def call_open(self) -> bool:
        """The call is stored but its result is not: resume must decide to re-run it."""
        return self.stored == ("user", "call")

    @property
    def result_stored(self) -> bool:
        return "result" in self.stored


POINTS = {p.name: p for p in [
    Point("after_begin", ("user",), False),
    Point("after_model_answer", ("user",), False),
    Point("after_assistant_saved", ("user", "call"), False),
    Point("during_tool", ("user", "call"), True),
    Point("after_tool_ran", ("user", "call"), True),
    Point("after_results_saved", ("user", "call", "result"), True),
    Point("in_final_write", ("user", "call", "result"), True),
]}

# The tool only matters where its call is open at the kill; elsewhere one of them runs.
CASES = [
    ("after_begin", UNSAFE_TOOL),
    ("after_model_answer", UNSAFE_TOOL),
    ("after_assistant_saved", UNSAFE_TOOL),
    ("after_assistant_saved", SAFE_TOOL),
    ("during_tool", UNSAFE_TOOL),
    ("during_tool", SAFE_TOOL),
    ("after_tool_ran", UNSAFE_TOOL),
    ("after_tool_ran", SAFE_TOOL),
    ("after_results_saved", SAFE_TOOL),
    ("in_final_write", SAFE_TOOL),
]


def crash(spawn: Spawn, point: Point, sid: str, tool: str, effects: Path) -> int:
    """Run the first send in a child that dies at ``point``; return its pid."""
    send = [{"op": "send", "text": "first"}]
    if point.name == "during_tool":
        child = spawn("crash", sid, send, tool=tool, tool_sleep=600.0, lease_ttl=CRASH_TTL)
        wait_until(lambda: bool(starts(read_effects(effects), pid=child.pid)),
                   "the tool to start")
        child.signal(signal.SIGKILL)
    else:
        child = spawn("crash", sid, send, tool=tool, lease_ttl=CRASH_TTL, crash_at=point.name)
    child.expect_killed()
    return child.pid


@pytest.mark.parametrize(("point_name", "tool"), CASES)
def test_kill_then_resume_then_send_again(backend: str, view: StoreView, spawn: Spawn,
                                          effects: Path, point_name: str, tool: str) -> None:
    point = POINTS[point_name]
    sid = view.new_session()

    # -- the kill --------------------------------------------------------------------------
    crashed = crash(spawn, point, sid, tool, effects)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert [k for _, k in snap.shapes()] == list(point.stored)
    assert [(s.send_index, s.status) for s in snap.sends] == [(0, "pending")]
    assert snap.session.pending_send == 0
    # The dead process never let go of the session: its lease runs out on its own.
    assert owner_pid(snap.session.lease_owner) == crashed
    ran = starts(read_effects(effects))
    assert [e["pid"] for e in ran] == ([crashed] if point.tool_started else [])
    crash_epoch = snap.session.lease_epoch

    # -- a fresh process resumes -------------------------------------------------------------
    resumer = spawn("resume", sid, [{"op": "resume"}], tool=tool)
    report = resumer.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert snap.send(0).status == "done"
    assert snap.session.pending_send is None and snap.session.lease_owner is None
    assert snap.session.lease_epoch > crash_epoch
    user, call_msg, result_msg, final = snap.messages
    assert user.body["parts"] == [{"kind": "text", "text": "first"}]
    (call,) = call_msg.body["parts"]
    assert call["name"] == tool
    (result,) = result_msg.body["parts"]
    assert result["call_id"] == call["id"]

    effects_now = read_effects(effects)
    ran_by_crash = starts(effects_now, pid=crashed)
    ran_by_resume = starts(effects_now, pid=resumer.pid)
    if point.call_open and tool == UNSAFE_TOOL:
        # Never re-run: the model is told the outcome is unknown.
        assert ran_by_resume == []
        assert result["content"] == UNKNOWN_OUTCOME and result["is_error"] is True
        assert result_msg.body["meta"].get("synthetic") == "unknown_outcome"
    elif point.call_open:
        # Safe to repeat: run again, as attempt 2, under the same idempotency key.
        assert [e["attempt"] for e in ran_by_resume] == [2]
        assert result == {"kind": "tool_result", "call_id": call["id"], "name": tool,
                          "content": f"{tool}(first) attempt 2", "is_error": False}
        if ran_by_crash:
            assert ran_by_crash[0]["key"] == ran_by_resume[0]["key"]
    elif point.result_stored:
        # The result was committed: kept as it is, nothing re-run.
        assert ran_by_resume == []
        assert result["content"] == f"{tool}(first) attempt 1"
    else:
        # The call itself was never stored: the resumer makes it and runs it, once.
        assert [e["attempt"] for e in ran_by_resume] == [1]
        assert result["content"] == f"{tool}(first) attempt 1"
    if tool == UNSAFE_TOOL:
        assert len(starts(effects_now, tool=UNSAFE_TOOL, send_index=0)) <= 1
        assert len(starts(effects_now, tool=UNSAFE_TOOL, send_index=0, pid=crashed)) == int(
            point.tool_started)
    assert final.body["parts"] == [{"kind": "text", "text": DONE_PREFIX + result["content"]}]
    assert report["results"] == [{
        "op": "resume", "send_index": 0, "final_text": DONE_PREFIX + result["content"],
        "status": "done", "stop_reason": "end_turn", "rounds": 2}]
    # The resumer asks the model once per missing answer, always with the stored history.
    assert len(report["requests"]) == (1 if "call" in point.stored else 2)
    assert_requests_sound(report["requests"], snap)

    # -- and the session goes on ---------------------------------------------------------------
    follower = spawn("follow", sid, [{"op": "send", "text": "second"}], tool=tool)
    report = follower.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(i, k) for i in (0, 1) for k in ("user", "call", "result", "text")]
    assert [s.status for s in snap.sends] == ["done", "done"]
    assert report["results"][0]["final_text"] == DONE_PREFIX + f"{tool}(second) attempt 1"
    assert len(report["requests"]) == 2
    assert_requests_sound(report["requests"], snap)
    assert [e["pid"] for e in starts(read_effects(effects), send_index=1)] == [follower.pid]


BOTH = f"{SAFE_TOOL},{UNSAFE_TOOL}"


@pytest.mark.parametrize("crash_at", ["after_tool_ran:2", "after_results_saved",
                                      f"during:{UNSAFE_TOOL}", f"during:{SAFE_TOOL}"])
def test_two_calls_in_one_answer(backend: str, view: StoreView, spawn: Spawn, effects: Path,
                                 crash_at: str) -> None:
    """The model calls both tools at once; the kill lands between or after their results.

    Results are stored in call order, as each and the ones before it are done, so any
    prefix of them may be stored. ``during:<tool>`` makes only that tool slow and kills
    the process while it sleeps: after the safe (first) call's result is stored, or after
    the unsafe (second) call has done its effect but cannot store its result before the
    first one's. Whatever the state, resume keeps the stored results, runs the safe call
    again if its result is missing, answers the unsafe call with the unknown outcome if
    its result is missing, and never runs the unsafe tool twice.
    """
    sid = view.new_session()
    send = [{"op": "send", "text": "first"}]
    if crash_at.startswith("during:"):
        slow = crash_at.partition(":")[2]
        crasher = spawn("crash", sid, send, tool=BOTH, lease_ttl=CRASH_TTL, tool_sleep=600.0,
                        slow_tool=slow)
        if slow == UNSAFE_TOOL:
            wait_until(lambda: len(view.snapshot(sid).messages) == 3,
                       "the safe call's result to be stored")
        else:
            wait_until(lambda: any(e["event"] == "effect" and e["tool"] == UNSAFE_TOOL
                                   for e in read_effects(effects)),
                       "the unsafe call's effect")
        assert starts(read_effects(effects), tool=slow)
        crasher.signal(signal.SIGKILL)
    else:
        crasher = spawn("crash", sid, send, tool=BOTH, lease_ttl=CRASH_TTL, crash_at=crash_at)
    crasher.expect_killed()
    before = view.snapshot(sid)
    before.check_consistent()
    kinds = [k for _, k in before.shapes()]
    assert kinds[:2] == ["user", "call"] and set(kinds[2:]) <= {"result"} and len(kinds) <= 4
    expected_results = {"after_results_saved": 2, f"during:{UNSAFE_TOOL}": 1,
                        f"during:{SAFE_TOOL}": 0}
    if crash_at in expected_results:
        assert len(kinds) == 2 + expected_results[crash_at]
    stored = {m.body["parts"][0]["name"]: m.body["parts"][0] for m in before.messages[2:]}

    resumer = spawn("resume", sid, [{"op": "resume"}], tool=BOTH)
    report = resumer.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "result"),
                             (0, "text")]
    calls = snap.messages[1].body["parts"]
    assert [c["name"] for c in calls] == [SAFE_TOOL, UNSAFE_TOOL]
    results = {m.body["parts"][0]["name"]: m.body["parts"][0] for m in snap.messages[2:4]}
    assert [r["call_id"] for r in results.values()] == [c["id"] for c in calls]
    for name, result in stored.items():
        assert results[name] == result, "a stored result was replaced"

    effects_now = read_effects(effects)
    assert starts(effects_now, tool=UNSAFE_TOOL, pid=resumer.pid) == []
    assert len(starts(effects_now, tool=UNSAFE_TOOL)) <= 1
    if UNSAFE_TOOL not in stored:
        assert results[UNSAFE_TOOL]["content"] == UNKNOWN_OUTCOME
    rerun = starts(effects_now, tool=SAFE_TOOL, pid=resumer.pid)
    if SAFE_TOOL in stored:
        assert rerun == []
    else:
        assert [e["attempt"] for e in rerun] == [2]
        assert results[SAFE_TOOL]["content"] == f"{SAFE_TOOL}(first) attempt 2"
    assert len(report["requests"]) == 1
    assert_requests_sound(report["requests"], snap)

    follower = spawn("follow", sid, [{"op": "send", "text": "second"}], tool=BOTH)
    report = follower.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert [s.status for s in snap.sends] == ["done", "done"]
    assert_requests_sound(report["requests"], snap)


@pytest.mark.parametrize("tool", [UNSAFE_TOOL, SAFE_TOOL])
def test_the_resumer_is_killed_too(backend: str, view: StoreView, spawn: Spawn, effects: Path,
                                   tool: str) -> None:
    """Recovery is itself crash-safe: the first resumer runs the tool and dies; the second
    treats that call like any other cut off by a crash."""
    sid = view.new_session()
    first = spawn("crash", sid, [{"op": "send", "text": "first"}], tool=tool,
                  lease_ttl=CRASH_TTL, crash_at="after_begin")
    first.expect_killed()
    second = spawn("resume1", sid, [{"op": "resume"}], tool=tool, lease_ttl=CRASH_TTL,
                   crash_at="after_tool_ran")
    second.expect_killed()
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert [k for _, k in snap.shapes()] == ["user", "call"]
    assert owner_pid(snap.session.lease_owner) == second.pid
    assert [(e["pid"], e["attempt"]) for e in starts(read_effects(effects))] == [(second.pid, 1)]

    third = spawn("resume2", sid, [{"op": "resume"}], tool=tool)
    report = third.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert snap.send(0).status == "done"
    (result,) = snap.messages[2].body["parts"]
    ran = [(e["pid"], e["attempt"]) for e in starts(read_effects(effects))]
    if tool == UNSAFE_TOOL:
        assert ran == [(second.pid, 1)]
        assert result["content"] == UNKNOWN_OUTCOME
    else:
        assert ran == [(second.pid, 1), (third.pid, 2)]
        assert result["content"] == f"{tool}(first) attempt 2"
    assert_requests_sound(report["requests"], snap)
