"""SIGKILL in the middle of a fold, then a fresh process redoes it and the session goes on.

The test pre-fills a session in its own process (with a budget nothing reaches, or, for
the cases cut off in a session's second fold, with the small budget, so that it folds
once) so that the next send must fold; a child (:mod:`tests.durability.fold_child`)
then sends with a small ``context_budget_tokens`` and dies inside the fold: at a crash
point (``fold_started``, ``fold_answered``, ``in_fold_commit``), or killed by the test
while a fold call is slow (for ``AgenticFold``, the ``write_summary`` call, when its two
notes exist only in the dead process's memory). One more case dies just *after* the fold
committed (``after_model_answer``, the send's own first model call). Then:

* the store holds what was committed and nothing else: the fold journal's entry for the
  interrupted fold is ``started`` (``done`` only if its commit landed), earlier folds are
  untouched, there is no note an uncommitted fold wrote, the message log and the
  projections are exactly as before (a fold never rewrites them), and the send is
  pending with its user message;
* a fresh process resumes: an uncommitted fold is done again (one ``done`` row for its
  index, over the same sends, with the summary and notes of the redo, which name the
  resumer's pid), a committed one is not; the send completes with its tool call; every
  request the model saw is well-formed (each tool call answered at once), shows the
  summary of a committed fold, the sends after it and the notes, and never anything of
  the dead process's fold;
* the same process then sends four more times (folding again where the budget says so):
  the journal stays one ``done`` row per fold index, 0, 1, 2..., the notes are exactly
  those the committed folds wrote.

Three more tests cover bugs found on the way (fixed): a fold slower than ``lease_ttl``
keeps the session (the send's lease is renewed while it folds); with projected sends, a
model reusing a tool call id after a fold leaves a log a new process can load; and the
notes count in the budget that decides when to fold.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.durability.child import EXIT_ERROR, EXIT_OK
from tests.durability.fold_child import CRASH_TEXT, DONE_PREFIX, TOOL_ASK, FoldArgs, mark
from tests.durability.fold_support import (
    FoldChild,
    Spawn,
    check_fold,
    check_journal,
    check_requests,
    fold_calls,
    folds,
    model_calls,
    notes,
    prefill,
    projections,
)
from tests.durability.harness import StoreView, wait_until

pytestmark = pytest.mark.slow

CRASH_TTL = 0.3
"""The crashing child's lease: short, so the resumer waits little for it to lapse."""
AFTER = [TOOL_ASK + "after 0", "question after 1", "question after 2", TOOL_ASK + "after 3"]
"""What the resumer sends once the crashed send is done."""


@dataclass(frozen=True, slots=True)
class Sizing:
    """How many sends to pre-fill, and the budget the next send is over."""

    sends: int
    budget: int
    earlier_folds: int = 0
    """Folds the pre-fill makes (with the same budget) before the fold that is cut off."""


SIZING = {
    ("llm_summary", "verbatim", 0): Sizing(6, 1300),
    ("agentic", "verbatim", 0): Sizing(6, 1300),
    ("llm_summary", "projected", 0): Sizing(12, 1100),
    ("agentic", "projected", 0): Sizing(12, 1100),
    ("llm_summary", "verbatim", 1): Sizing(10, 1300, 1),
    ("agentic", "verbatim", 1): Sizing(10, 1300, 1),
}
"""Chosen so that the send after the pre-fill makes exactly one fold (a verbatim send
renders to ~210 estimated tokens, a projected one to ~85; the tools to ~420)."""


@dataclass(frozen=True, slots=True)
class Kill:
    """Where the child dies."""

    name: str
    crash_at: str | None = None
    """The crash point; ``None``: the test kills it during a slow fold call."""
    committed: bool = False
    """The fold's commit landed before the kill."""


KILLS = {k.name: k for k in [
    Kill("fold_started", "fold_started"),
    Kill("fold_answered", "fold_answered"),
    Kill("in_fold_commit", "in_fold_commit"),
    Kill("during_slow_fold_call"),
    Kill("after_fold_committed", "after_model_answer", committed=True),
]}

CASES = [
    *[(kill, "llm_summary", "verbatim", 0) for kill in KILLS],
    *[(kill, "agentic", "projected", 0) for kill in KILLS],
    ("in_fold_commit", "llm_summary", "projected", 0),
    ("in_fold_commit", "agentic", "verbatim", 0),
    # The second fold of the session: it folds the first one's summary in.
    ("in_fold_commit", "llm_summary", "verbatim", 1),
    ("during_slow_fold_call", "agentic", "verbatim", 1),
]
"""(kill, strategy, representation, folds before the one cut off)."""


@pytest.fixture
def fold_spawn(view: StoreView, effects: Path, tmp_path: Path) -> Iterator[Spawn]:
    """Start a fold child on the test's store: ``spawn(name, sid, ops, **FoldArgs fields)``."""
    started: list[FoldChild] = []

    def start(name: str, session_id: str, ops: list[dict[str, Any]], *,
              crash_at: str | None = None, **fields: Any) -> FoldChild:
        args = FoldArgs(dsn=view.dsn, prefix=view.prefix, session_id=session_id, ops=ops,
                        tool="lookup", effects=str(effects),
                        out=str(tmp_path / f"{name}.json"), **fields)
        child = FoldChild(args, crash_at=crash_at, name=name)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


# -- the test ----------------------------------------------------------------------------------


def crash(fold_spawn: Spawn, effects: Path, sid: str, kill: Kill, strategy: str,
          representation: str, budget: int) -> int:
    """Run the send that must fold in a child that dies as ``kill`` says; its pid."""
    fields: dict[str, Any] = {"strategy": strategy, "representation": representation,
                              "budget": budget, "lease_ttl": CRASH_TTL}
    send = [{"op": "send", "text": CRASH_TEXT}]
    if kill.crash_at is None:
        slow = len(fold_calls(strategy)) - 1  # the last fold call: write_summary
        child = fold_spawn("crash", sid, send, fold_delay=600.0, slow_round=slow, **fields)
        wait_until(lambda: ("fold", slow) in model_calls(effects, child.pid),
                   "the slow fold call to start")
        child.signal(signal.SIGKILL)
    else:
        child = fold_spawn("crash", sid, send, crash_at=kill.crash_at, **fields)
    child.expect_killed()
    return child.pid


@pytest.mark.parametrize(("kill_name", "strategy", "representation", "earlier"), CASES)
def test_kill_mid_fold_then_resume(backend: str, view: StoreView, fold_spawn: Spawn,
                                   effects: Path, tmp_path: Path, kill_name: str,
                                   strategy: str, representation: str, earlier: int) -> None:
    kill = KILLS[kill_name]
    sizing = SIZING[strategy, representation, earlier]
    sid = prefill(view, strategy, representation, sizing.sends,
                  budget=sizing.budget if earlier else None)
    done_before = folds(view, sid)
    assert [(f.fold_index, f.status) for f in done_before] == [(i, "done") for i in
                                                               range(earlier)]
    notes_before = [op["text"] for f in done_before for op in f.notes_written]
    before = view.snapshot(sid)
    shown_before = projections(view, sid, sizing.sends)
    assert (len(shown_before) == sizing.sends) == (representation == "projected")

    # -- the kill ---------------------------------------------------------------------------
    crashed = crash(fold_spawn, effects, sid, kill, strategy, representation, sizing.budget)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.messages[:len(before.messages)] == before.messages, "the log was rewritten"
    (user,) = snap.messages[len(before.messages):]
    assert (user.send_index, user.role) == (sizing.sends, "user")
    assert user.body["parts"] == [{"kind": "text", "text": CRASH_TEXT}]
    assert snap.session.pending_send == sizing.sends
    assert snap.send(sizing.sends).status == "pending"
    assert projections(view, sid, sizing.sends + 1) == shown_before
    *kept, interrupted = folds(view, sid)
    assert kept == done_before
    assert interrupted.fold_index == earlier
    assert interrupted.first_send == (done_before[-1].end_send if done_before else 0)
    assert interrupted.first_send < interrupted.end_send < sizing.sends
    assert interrupted.end_seq == snap.send(interrupted.end_send).first_seq
    if kill.committed:
        check_fold(interrupted, strategy, crashed)
    else:
        assert interrupted.status == "started"
        assert interrupted.summary == "" and list(interrupted.notes_written) == []
    assert [n.text for n in notes(view, sid)] == notes_before + [
        op["text"] for op in interrupted.notes_written if kill.committed]

    # -- a fresh process resumes ------------------------------------------------------------
    gate = tmp_path / "go-on"
    ops = [{"op": "resume"}, {"op": "wait", "path": str(gate)},
           *[{"op": "send", "text": text} for text in AFTER]]
    resumer = fold_spawn("resume", sid, ops, strategy=strategy, representation=representation,
                         budget=sizing.budget)
    wait_until(lambda: resumer.proc.poll() is not None
               or view.snapshot(sid).session.pending_send is None, "the resumed send")
    if resumer.proc.poll() is not None:  # it waits for the gate: gone means it failed
        resumer.expect_exit(EXIT_OK)
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert snap.messages[:len(before.messages) + 1] == [*before.messages, user]
    assert [m.role for m in snap.of_send(sizing.sends)] == ["user", "assistant", "tool",
                                                            "assistant"]
    assert snap.send(sizing.sends).status == "done"
    *kept, fold = folds(view, sid)
    assert kept == done_before
    if kill.committed:
        assert fold == interrupted, "a committed fold was done again"
    else:
        check_fold(fold, strategy, resumer.pid)
        assert (fold.fold_index, fold.first_send, fold.end_send, fold.end_seq) == (
            interrupted.fold_index, interrupted.first_send, interrupted.end_send,
            interrupted.end_seq)
    assert [n.text for n in notes(view, sid)] == notes_before + [
        op["text"] for op in fold.notes_written]
    assert projections(view, sid, sizing.sends) == shown_before
    expected_calls = [] if kill.committed else fold_calls(strategy)
    assert model_calls(effects, resumer.pid) == [*expected_calls, ("send", 0), ("send", 0)]

    # -- and the session goes on ----------------------------------------------------------------
    gate.touch()
    report = resumer.expect_exit(EXIT_OK)
    final = f"{DONE_PREFIX}value of the crash send"
    assert report["results"][0] == {
        "op": "resume", "send_index": sizing.sends, "final_text": final, "status": "done",
        "stop_reason": "end_turn", "calls": len(expected_calls) + 2}
    assert [r["send_index"] for r in report["results"][1:]] == [
        sizing.sends + 1 + i for i in range(len(AFTER))]
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert [s.status for s in snap.sends] == ["done"] * (sizing.sends + 1 + len(AFTER))
    assert snap.messages[:len(before.messages) + 1] == [*before.messages, user]
    check_journal(view, sid, strategy, [*done_before, fold], resumer.pid)
    check_requests(report["requests"], snap, folds(view, sid), representation,
                   None if kill.committed else mark(crashed))


def test_a_fold_longer_than_the_lease_keeps_the_session(
        backend: str, view: StoreView, fold_spawn: Spawn, effects: Path,
        tmp_path: Path) -> None:
    """A process whose fold call outlasts ``lease_ttl`` still holds the session.

    A real summary call of a long history can take longer than the default 30 s. The
    folding process must renew its lease meanwhile, so that another process resuming the
    session gives up with SessionBusyError after its ``lease_wait`` instead of taking the
    session over, folding again and making the first one's fold commit fail.
    """
    sizing = SIZING["llm_summary", "verbatim", 0]
    sid = prefill(view, "llm_summary", "verbatim", sizing.sends)
    gate = tmp_path / "fold-may-answer"
    folder = fold_spawn("folder", sid, [{"op": "send", "text": CRASH_TEXT}],
                        strategy="llm_summary", budget=sizing.budget, lease_ttl=CRASH_TTL,
                        slow_round=0, fold_gate=str(gate))
    wait_until(lambda: ("fold", 0) in model_calls(effects, folder.pid), "the fold call")
    other = fold_spawn("other", sid, [{"op": "resume"}], strategy="llm_summary",
                       budget=sizing.budget, lease_wait=10 * CRASH_TTL)
    other_code = other.wait()
    gate.touch()
    folder.wait()
    other_report = other.report()
    assert other_code == EXIT_ERROR, other_report
    assert other_report["error"]["type"] == "SessionBusyError"
    report = folder.expect_exit(EXIT_OK)
    assert report["results"][0]["send_index"] == sizing.sends
    (fold,) = folds(view, sid)
    check_fold(fold, "llm_summary", folder.pid)


def test_a_reused_call_id_after_a_fold_leaves_the_session_loadable(
        backend: str, view: StoreView, fold_spawn: Spawn) -> None:
    """The model gives every tool call the id ``call_0`` (as providers that number the
    calls of each answer do); the loop makes stored ids unique where requests need it.

    The last pre-filled send calls the tool (``call_0``) and is kept verbatim in the log
    after the fold; the next send folds, then calls the tool again. Expected: the new
    call is stored under a fresh id, and a new process can go on with the session.
    """
    sizing = SIZING["agentic", "projected", 0]
    last = sizing.sends - 1
    sid = prefill(view, "agentic", "projected", sizing.sends, reused_call_id="call_0",
                  text=lambda i: f"{TOOL_ASK}item {i}" if i == last else f"question {i}")
    fields: dict[str, Any] = {"strategy": "agentic", "representation": "projected",
                              "budget": sizing.budget, "reused_call_id": "call_0"}
    folder = fold_spawn("folder", sid, [{"op": "send", "text": CRASH_TEXT}], **fields)
    folder.expect_exit(EXIT_OK)
    (fold,) = folds(view, sid)
    assert fold.end_send <= last, "the send that calls call_0 first must stay unfolded"
    after = fold_spawn("after", sid, [{"op": "send", "text": "question after"}], **fields)
    after.wait()
    unfolded = view.snapshot(sid).messages[fold.end_seq:]
    ids = [p["id"] for m in unfolded for p in m.body["parts"] if p["kind"] == "tool_call"]
    after.expect_exit(EXIT_OK)
    assert len(ids) == len(set(ids)), ids
    view.snapshot(sid).check_consistent()


def test_requests_stay_within_the_budget_with_notes(backend: str, view: StoreView,
                                                    fold_spawn: Spawn) -> None:
    """``AgenticFold`` writes two long notes (~230 tokens each); after that fold, the first
    request of every send, notes included, must still fit ``context_budget_tokens`` (by
    the loop's own estimate), folding again where it would not. (Later requests of a send
    also carry its tool calls and results: a fold happens only before a send.)"""
    sizing = SIZING["agentic", "verbatim", 0]
    sid = prefill(view, "agentic", "verbatim", sizing.sends)
    texts = [CRASH_TEXT, *AFTER, "question after 4"]
    child = fold_spawn("sender", sid, [{"op": "send", "text": t} for t in texts],
                       strategy="agentic", budget=sizing.budget, note_pad=900)
    report = child.expect_exit(EXIT_OK)
    assert len(folds(view, sid)) >= 2  # the notes alone decide some folds
    assert [len(n.text) > 900 for n in notes(view, sid)] == [True, True]
    first: dict[int, int] = {}  # a send's first request: the one its fold decision is for
    for request in report["requests"]:
        if request["metadata"].get("purpose") != "fold":
            first.setdefault(request["metadata"]["send_index"], request["estimate"])
    over = [(index, size) for index, size in first.items() if size > sizing.budget]
    assert not over, f"budget {sizing.budget}; over it (send, estimated tokens): {over}"
    view.snapshot(sid).check_consistent()
