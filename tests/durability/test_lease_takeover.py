"""A process frozen past its lease loses the session, and cannot write once it wakes.

Child A starts a send and is frozen (SIGSTOP) while it waits for something slow: its
unsafe tool, or the model. The test freezes it right after it sees one of A's lease
renewals commit (so A is not inside a transaction holding the session row), and waits
past the lease's TTL. Child B then resumes the send: it takes the lease over and
finishes the send; A's tool call, cut off, is not run again (B records that its outcome
is unknown), while a model call that never answered is simply made again. Then A is
woken with SIGCONT: its lease renewal finds the session taken over, the run is cancelled
and A fails with ``LeaseLostError``, having written nothing at all since B took over.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.child import DONE_PREFIX, EXIT_LEASE_LOST, EXIT_OK, UNSAFE_TOOL
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

TTL = 1.5


def events(path: Path, event: str, pid: int) -> list[dict[str, Any]]:
    return [e for e in read_effects(path) if e["event"] == event and e["pid"] == pid]


@pytest.mark.parametrize("frozen_in", ["tool", "model"])
def test_frozen_holder_loses_the_session_to_resume(backend: str, view: StoreView,
                                                   spawn: Spawn, effects: Path,
                                                   frozen_in: str) -> None:
    sid = view.new_session()
    slow = {"tool_sleep": 600.0} if frozen_in == "tool" else {"model_delay": 600.0}
    a = spawn("a", sid, [{"op": "send", "text": "first"}], tool=UNSAFE_TOOL, lease_ttl=TTL,
              **slow)
    waiting_for = "start" if frozen_in == "tool" else "model"
    wait_until(lambda: bool(events(effects, waiting_for, a.pid)), f"A to be in the {frozen_in}")
    held = view.session(sid)
    assert owner_pid(held.lease_owner) == a.pid and held.pending_send == 0
    epoch_a = held.lease_epoch
    wait_until(lambda: view.session(sid).lease_expires_at != held.lease_expires_at,
               "A to renew its lease")
    a.signal(signal.SIGSTOP)
    frozen = view.snapshot(sid)
    assert [k for _, k in frozen.shapes()] == (["user", "call"] if frozen_in == "tool"
                                               else ["user"])
    assert frozen.session.lease_epoch == epoch_a
    # B would wait for A's lease anyway; once it lapsed, B's start is a takeover.
    wait_until(lambda: view.lease_lapsed(sid), "A's lease to lapse")

    # -- B takes the send over -------------------------------------------------------------
    b = spawn("b", sid, [{"op": "resume"}], tool=UNSAFE_TOOL)
    report_b = b.expect_exit(EXIT_OK)
    taken = view.snapshot(sid)
    taken.check_consistent()
    assert taken.shapes() == [(0, "user"), (0, "call"), (0, "result"), (0, "text")]
    assert taken.send(0).status == "done"
    assert taken.session.lease_epoch > epoch_a
    assert taken.session.pending_send is None and taken.session.lease_owner is None
    (result,) = taken.messages[2].body["parts"]
    if frozen_in == "tool":
        # A ran the unsafe tool: B must not run it again.
        expected = UNKNOWN_OUTCOME
        assert taken.messages[2].body["meta"].get("synthetic") == "unknown_outcome"
    else:
        # A never got its answer: B asks the model itself and runs the tool, once.
        expected = f"{UNSAFE_TOOL}(first) attempt 1"
    assert result["content"] == expected
    assert report_b["results"][0]["final_text"] == DONE_PREFIX + expected
    assert len(report_b["requests"]) == (1 if frozen_in == "tool" else 2)
    assert_requests_sound(report_b["requests"], taken)
    runner = a.pid if frozen_in == "tool" else b.pid
    assert [e["pid"] for e in starts(read_effects(effects))] == [runner]
    effects_before_wake = read_effects(effects)

    # -- A wakes up to a session that is no longer its own ----------------------------------
    a.signal(signal.SIGCONT)
    report_a = a.expect_exit(EXIT_LEASE_LOST)
    assert report_a["error"]["type"] == "LeaseLostError"
    assert report_a["error"]["epoch"] == epoch_a
    assert report_a["results"] == []
    assert view.snapshot(sid) == taken, "A wrote to the store after losing its lease"
    # A's run was cancelled: its tool did nothing more, nor did its model call resolve.
    assert read_effects(effects) == effects_before_wake

    # -- the session is fine ----------------------------------------------------------------
    c = spawn("c", sid, [{"op": "send", "text": "second"}], tool=UNSAFE_TOOL)
    report_c = c.expect_exit(EXIT_OK)
    after = view.snapshot(sid)
    after.check_consistent()
    assert [s.status for s in after.sends] == ["done", "done"]
    assert report_c["results"][0]["final_text"] == DONE_PREFIX + f"{UNSAFE_TOOL}(second) attempt 1"
    assert_requests_sound(report_c["requests"], after)
