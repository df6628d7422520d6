"""Four processes send 25 times each to one session, all at once, waiting for the lease.

Every send has one tool call, so each is four messages written in three transactions
with the model and a tool in between: the window for interleaving is wide open. The
session lease must serialize them completely.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.durability.child import DONE_PREFIX, EXIT_OK, UNSAFE_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import StoreView, assert_requests_sound, read_effects, starts

pytestmark = pytest.mark.slow

WORKERS = 4
SENDS = 25


def test_four_processes_share_one_session(backend: str, view: StoreView, spawn: Spawn,
                                          effects: Path, tmp_path: Path) -> None:
    sid = view.new_session()
    gate = tmp_path / "go"
    children = [
        spawn(f"worker{w}", sid, [{"op": "send", "text": f"w{w}-{k}"} for k in range(SENDS)],
              gate=str(gate))
        for w in range(WORKERS)]
    gate.touch()  # each child waits for it with its store already open
    reports = [child.expect_exit(EXIT_OK) for child in children]

    snap = view.snapshot(sid)
    snap.check_consistent()
    total = WORKERS * SENDS
    assert [s.send_index for s in snap.sends] == list(range(total))
    assert {s.status for s in snap.sends} == {"done"}
    assert snap.session.pending_send is None and snap.session.lease_owner is None
    assert snap.shapes() == [(i, k) for i in range(total)
                             for k in ("user", "call", "result", "text")]
    assert [m.seq for m in snap.messages] == list(range(4 * total))

    # Each send is one piece of one worker's conversation: its own text, its own call,
    # its own result and answer, and no one else's.
    by_text: dict[str, int] = {}
    effects_now = read_effects(effects)
    for index in range(total):
        user, call_msg, result_msg, final = (m.body["parts"] for m in snap.of_send(index))
        text = user[0]["text"]
        by_text[text] = index
        (call,) = call_msg
        (result,) = result_msg
        assert call["name"] == UNSAFE_TOOL and result["call_id"] == call["id"]
        assert result["content"] == f"{UNSAFE_TOOL}({text}) attempt 1"
        assert final == [{"kind": "text", "text": DONE_PREFIX + result["content"]}]
        ran = starts(effects_now, send_index=index)
        assert [(e["call_id"], e["tag"]) for e in ran] == [(call["id"], text)]
    assert sorted(by_text) == sorted(f"w{w}-{k}" for w in range(WORKERS) for k in range(SENDS))
    assert len(starts(effects_now)) == total

    for w, (child, report) in enumerate(zip(children, reports, strict=True)):
        indexes = [r["send_index"] for r in report["results"]]
        assert indexes == [by_text[f"w{w}-{k}"] for k in range(SENDS)]
        assert indexes == sorted(indexes)
        assert {r["status"] for r in report["results"]} == {"done"}
        assert {e["pid"] for e in starts(effects_now) if e["tag"].startswith(f"w{w}-")} == {
            child.pid}
        assert len(report["requests"]) == 2 * SENDS
        assert_requests_sound(report["requests"], snap)


RACERS = 4
RACE_SENDS = 60


def test_begin_send_refuses_only_as_busy_under_contention(
        view: StoreView, spawn: Spawn, tmp_path: Path) -> None:
    """Racing begin_send straight on the store.

    A refusal whose UPDATE lost to the holder's release (the state read just after shows
    the lease free) must still be a SessionBusyError, with ``retry_after=0``: never a
    crash, never SendPendingError (no send is ever pending while the lease is free).
    """
    sid = view.new_session()
    gate = tmp_path / "go"
    children = [spawn(f"racer{r}", sid, [{"op": "race_begin", "sends": RACE_SENDS}],
                      gate=str(gate)) for r in range(RACERS)]
    gate.touch()
    reports = [child.expect_exit(EXIT_OK) for child in children]
    results = [r["results"][0] for r in reports]
    assert [r["sends"] for r in results] == [RACE_SENDS] * RACERS
    assert sum(r["busy"] for r in results) > 0  # they did contend
    assert all(r["retry_after_min"] >= 0 for r in results if r["busy"])
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert len(snap.sends) == RACERS * RACE_SENDS
    assert {s.status for s in snap.sends} == {"done"}
