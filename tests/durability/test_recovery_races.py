"""Recovery racing with other processes: two resumers at once, and senders that find a
send left pending by a process that died among them."""

from __future__ import annotations

from pathlib import Path

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.child import EXIT_OK, UNSAFE_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import (
    StoreView,
    assert_requests_sound,
    read_effects,
    starts,
)

pytestmark = pytest.mark.slow

CRASH_TTL = 1.0


def test_two_resumers_at_once(backend: str, view: StoreView, spawn: Spawn, effects: Path,
                              tmp_path: Path) -> None:
    """Two workers resume the same interrupted send together: one finishes it, the other
    finds nothing left to do; the unsafe tool is not run again by either."""
    sid = view.new_session()
    spawn("crash", sid, [{"op": "send", "text": "first"}], lease_ttl=CRASH_TTL,
          crash_at="after_tool_ran").expect_killed()
    gate = tmp_path / "go"
    resumers = [spawn(f"resume{i}", sid, [{"op": "resume"}], gate=str(gate)) for i in range(2)]
    gate.touch()
    reports = [r.expect_exit(EXIT_OK) for r in resumers]
    outcomes = [report["results"][0] for report in reports]
    assert sorted(o is None for o in outcomes) == [False, True], outcomes
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert snap.messages[2].body["parts"][0]["content"] == UNKNOWN_OUTCOME
    assert len(starts(read_effects(effects))) == 1
    for report in reports:
        assert_requests_sound(report["requests"], snap)


SENDS = 4
"""Sends each survivor makes before the other process dies, and again after."""


def test_senders_finish_a_send_whose_process_died(backend: str, view: StoreView,
                                                  spawn: Spawn, effects: Path,
                                                  tmp_path: Path) -> None:
    """Three processes share a session; one dies in the middle of its third send. The two
    others (``on_pending="resume"``), sending again afterwards, wait for its lease to
    lapse, finish its send for it, and carry on with theirs."""
    sid = view.new_session()
    gate, died = tmp_path / "go", tmp_path / "died"

    def ops(w: int) -> list[dict[str, object]]:
        sends: list[dict[str, object]] = [{"op": "send", "text": f"w{w}-{k}"}
                                          for k in range(2 * SENDS)]
        return [*sends[:SENDS], {"op": "wait", "path": str(died)}, *sends[SENDS:]]

    doomed = spawn("w0", sid, [{"op": "send", "text": f"w0-{k}"} for k in range(3)],
                   gate=str(gate), lease_ttl=CRASH_TTL, crash_at="after_tool_ran:3")
    others = [spawn(f"w{w}", sid, ops(w), gate=str(gate), on_pending="resume")
              for w in (1, 2)]
    gate.touch()
    doomed.expect_killed()
    died.touch()
    reports = [child.expect_exit(EXIT_OK) for child in others]

    snap = view.snapshot(sid)
    snap.check_consistent()
    total = 3 + 4 * SENDS  # w0's two finished sends and the one it died in, and the rest
    assert [s.status for s in snap.sends] == ["done"] * total
    assert snap.shapes() == [(i, k) for i in range(total)
                             for k in ("user", "call", "result", "text")]
    texts = {snap.of_send(i)[0].body["parts"][0]["text"]: i for i in range(total)}
    assert sorted(texts) == sorted([f"w0-{k}" for k in range(3)]
                                   + [f"w{w}-{k}" for w in (1, 2) for k in range(2 * SENDS)])
    orphan = texts["w0-2"]
    assert snap.of_send(orphan)[2].body["parts"][0]["content"] == UNKNOWN_OUTCOME
    effects_now = read_effects(effects)
    assert [e["pid"] for e in starts(effects_now, send_index=orphan)] == [doomed.pid]
    for index in range(total):
        assert len(starts(effects_now, tool=UNSAFE_TOOL, send_index=index)) == 1
    for report in reports:
        assert [r["status"] for r in report["results"]] == ["done"] * (2 * SENDS)
        assert_requests_sound(report["requests"], snap)


@pytest.mark.parametrize("how", ["heal", "abort"])
def test_heal_or_abort_after_a_kill(backend: str, view: StoreView, spawn: Spawn,
                                    effects: Path, how: str) -> None:
    """After a kill that cut a tool call off, a fresh process heals the send (a result for
    the open call, the send still pending, then resumed) or aborts it (closed as
    ``aborted``); either way the session takes a new send and never runs the tool again."""
    sid = view.new_session()
    crasher = spawn("crash", sid, [{"op": "send", "text": "first"}], lease_ttl=CRASH_TTL,
                    crash_at="after_tool_ran")
    crasher.expect_killed()
    fixer = spawn(how, sid, [{"op": how}])
    report = fixer.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.shapes() == [(0, "user"), (0, "call"), (0, "result")]
    (result,) = snap.messages[2].body["parts"]
    assert result["content"] == UNKNOWN_OUTCOME and result["is_error"] is True
    assert snap.messages[2].body["meta"].get("synthetic") == ("healed" if how == "heal"
                                                               else "aborted")
    if how == "heal":
        assert report["results"] == [{"op": "heal", "healed": 1}]
        assert snap.send(0).status == "pending" and snap.session.pending_send == 0
        assert snap.session.lease_owner is None
        ops = [{"op": "resume"}, {"op": "send", "text": "second"}]
    else:
        assert report["results"] == [{"op": "abort", "aborted": True}]
        assert snap.send(0).status == "aborted" and snap.session.pending_send is None
        ops = [{"op": "send", "text": "second"}]
    follower = spawn("follow", sid, ops)
    report = follower.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    expected = [(0, "user"), (0, "call"), (0, "result")]
    expected += [(0, "text")] if how == "heal" else []
    expected += [(1, "user"), (1, "call"), (1, "result"), (1, "text")]
    assert snap.shapes() == expected
    assert [s.status for s in snap.sends] == ["done" if how == "heal" else "aborted", "done"]
    assert [e["pid"] for e in starts(read_effects(effects))] == [crasher.pid, follower.pid]
    assert_requests_sound(report["requests"], snap)
