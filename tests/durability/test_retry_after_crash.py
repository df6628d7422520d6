"""After a crash, the application retries the send with its own ``request_key``.

Child A sends with a key and is killed (SIGKILL at a crash point) while it still holds
the session's lease. Retriers, started beforehand and let go the moment A is dead, send
the same text with the same key under ``on_pending="resume"``: they wait out A's lease
(and report that wait, naming A as gone), finish A's send, and return its result. One
retrier, or two at once: the send is finished once, no message is duplicated, and the
unsafe tool never runs twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from power_loop.loop.waiting import HOLDER_GONE
from tests.durability.child import DONE_PREFIX, EXIT_OK, UNSAFE_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import StoreView, owner_pid, read_effects, starts

pytestmark = pytest.mark.slow

TTL = 2.0
"""A's lease: long enough that retriers let go at A's death find it unexpired."""
TEXT = "pay the invoice"
SEND = {"op": "send", "text": TEXT, "request_key": "invoice-7"}


def crash_a(spawn: Spawn, sid: str, view: StoreView, crash_at: str) -> int:
    """A sends and dies at ``crash_at``, its send pending and its lease held; its pid."""
    a = spawn("a", sid, [SEND], crash_at=crash_at, lease_ttl=TTL, on_pending="resume")
    a.expect_killed()
    left = view.session(sid)
    assert left.pending_send == 0 and owner_pid(left.lease_owner) == a.pid
    return a.pid


def retried_result(report: dict[str, Any]) -> dict[str, Any]:
    (result,) = report["results"]
    assert isinstance(result, dict)
    return result


def test_a_retry_resumes_the_crashed_send(backend: str, view: StoreView, spawn: Spawn,
                                          effects: Path, tmp_path: Path) -> None:
    sid = view.new_session()
    gate = tmp_path / "go"
    b = spawn("b", sid, [SEND], gate=str(gate), lease_ttl=TTL, on_pending="resume")
    dead = crash_a(spawn, sid, view, "after_tool_ran")  # mid-tool: its effect happened
    gate.touch()

    report = b.expect_exit(EXIT_OK)
    result = retried_result(report)
    assert (result["send_index"], result["status"]) == (0, "done")
    assert result["final_text"] == DONE_PREFIX + UNKNOWN_OUTCOME
    waits = report["lease_waits"]
    assert waits and all(owner_pid(w["holder"]) == dead for w in waits)
    assert {(w["reason"], w["send_index"]) for w in waits} == {(HOLDER_GONE, 0)}

    done = view.snapshot(sid)
    done.check_consistent()
    assert done.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert done.send(0).status == "done" and len(done.sends) == 1
    assert done.messages[2].body["meta"].get("synthetic") == "unknown_outcome"
    (ran,) = starts(read_effects(effects), tool=UNSAFE_TOOL)  # A's run, never repeated
    assert ran["pid"] == dead


def test_two_retries_at_once_finish_the_send_once(backend: str, view: StoreView,
                                                  spawn: Spawn, effects: Path,
                                                  tmp_path: Path) -> None:
    sid = view.new_session()
    gate = tmp_path / "go"
    retriers = [spawn(name, sid, [SEND], gate=str(gate), lease_ttl=TTL, on_pending="resume")
                for name in ("b", "c")]
    dead = crash_a(spawn, sid, view, "after_model_answer")  # its answer never stored
    gate.touch()

    reports = [r.expect_exit(EXIT_OK) for r in retriers]
    results = [retried_result(r) for r in reports]
    assert results[0] == results[1]
    assert (results[0]["send_index"], results[0]["status"]) == (0, "done")
    assert results[0]["final_text"].startswith(DONE_PREFIX + UNSAFE_TOOL)
    for report in reports:
        assert (HOLDER_GONE, dead) in {(w["reason"], owner_pid(w["holder"]))
                                       for w in report["lease_waits"]}

    done = view.snapshot(sid)
    done.check_consistent()
    assert done.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert done.send(0).status == "done" and len(done.sends) == 1
    record = read_effects(effects)
    (ran,) = starts(record, tool=UNSAFE_TOOL)  # run once, by whichever retrier resumed
    assert ran["pid"] in {r.pid for r in retriers} and ran["attempt"] == 1
    models = [e["pid"] for e in record if e["event"] == "model"]
    assert models.count(dead) == 1 and len(models) == 3  # A's call, then the resumer's two
    assert len({pid for pid in models if pid != dead}) == 1
