"""Fold strategies: what they choose, AgenticFold's bounded tool loop, whose model they use.

``choose`` is checked as a pure function; AgenticFold's loop is run on a ``FoldJob`` with
a scripted model (bounded by ``max_rounds``, bad tool input answered with an error, note
bounds enforced, ``write_summary`` ends it); a strategy's own ``llm`` is used through the
loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    FoldJob,
    FoldOutcome,
    InvalidArgumentError,
    LLMRequest,
    LLMSummaryFold,
    Message,
    NoteLimits,
    ScriptedLLM,
    SendCost,
    StatefulAgentLoop,
    Store,
    Usage,
)
from power_loop.context.fold import SUMMARY_SYSTEM
from power_loop.llm.scripted import ScriptedCall, Turn, call_tool, call_tools, reply
from power_loop.store.context_ops import NoteRecord
from tests.context.planned import PlannedModel, SendPlan, Step
from tests.context.providers import check_both
from tests.context.support import echo, is_fold_request, request_tokens

# -- choose ---------------------------------------------------------------------------

_COSTS = st.lists(st.integers(1, 500), min_size=1, max_size=30)


@given(costs=_COSTS, budget=st.integers(1, 5_000), keep=st.floats(0, 0.95))
def test_summary_fold_keeps_the_newest_sends_that_fit(costs: list[int], budget: int,
                                                      keep: float) -> None:
    sends = [SendCost(i, c) for i, c in enumerate(costs)]
    count = LLMSummaryFold(keep_fraction=keep).choose(sends, budget)
    assert 1 <= count <= len(sends)
    assert sum(costs[count:]) <= budget * keep
    if count > 1:  # folding one send fewer would keep more than the room
        assert sum(costs[count - 1:]) > budget * keep


@given(costs=_COSTS, budget=st.integers(1, 5_000), keep=st.integers(0, 40))
def test_agentic_fold_keeps_the_last_sends(costs: list[int], budget: int, keep: int) -> None:
    sends = [SendCost(i, c) for i, c in enumerate(costs)]
    count = AgenticFold(keep_last_sends=keep).choose(sends, budget)
    by_count = min(len(sends), max(1, len(sends) - keep))
    assert by_count <= count <= len(sends)
    if count < len(sends):  # what it keeps fits
        assert sum(costs[count:]) <= budget
    if count > by_count:  # it folds past keep_last_sends only as far as the room needs
        assert sum(costs[count - 1:]) > budget


def test_strategy_arguments_are_validated() -> None:
    with pytest.raises(InvalidArgumentError):
        LLMSummaryFold(keep_fraction=1.0)
    with pytest.raises(InvalidArgumentError):
        AgenticFold(keep_last_sends=-1)
    with pytest.raises(InvalidArgumentError):
        AgenticFold(max_rounds=0)


# -- AgenticFold's tool loop ----------------------------------------------------------


def note(note_id: int, text: str) -> NoteRecord:
    now = datetime.now(UTC)
    return NoteRecord("s", note_id, text, now, now)


FOLD_LIMITS = NoteLimits(max_notes=2, max_chars=20)


def job(llm: ScriptedLLM, *, notes: Sequence[NoteRecord] = (),
        limits: NoteLimits = FOLD_LIMITS) -> FoldJob:
    sends = [(0, [Message.user("What is 6 x 7?"), Message.assistant("42")]),
             (1, [Message.user("And 6 x 8?"), Message.assistant("48")])]
    return FoldJob("s", 3, sends, "earlier: the user likes numbers", notes, llm, limits)


def by_round(*turns: Turn) -> Callable[[LLMRequest], Turn]:
    """A fold model answering round ``n`` with ``turns[n]`` (the last one after that)."""
    return lambda request: turns[min(request.metadata.get("round", 0), len(turns) - 1)]


def results_of(request: LLMRequest) -> list[tuple[str, str, bool]]:
    return [(r.name, r.content, r.is_error) for m in request.messages for r in m.tool_results]


async def run_fold(script: Callable[[LLMRequest], Turn], *, max_rounds: int = 6,
                   notes: Sequence[NoteRecord] = ()) -> tuple[FoldOutcome, ScriptedLLM]:
    llm = ScriptedLLM(script)
    outcome = await AgenticFold(max_rounds=max_rounds).fold(job(llm, notes=notes))
    for request in llm.requests:
        check_both(request)
        assert request.metadata["purpose"] == "fold" and request.system == SUMMARY_SYSTEM
    return outcome, llm


async def test_agentic_fold_is_bounded_by_max_rounds() -> None:
    outcome, llm = await run_fold(lambda request: Turn(
        text="my summary", tool_calls=(ScriptedCall("note_add", {"text": "n"}),),
        usage=Usage(input_tokens=10, output_tokens=1)), max_rounds=3)
    assert outcome.calls == 3 == len(llm.requests)
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "none"]
    assert llm.requests[-1].messages[-1].text == "Write the summary now, as plain text."
    assert outcome.summary == "my summary"
    assert outcome.usage == Usage(input_tokens=30, output_tokens=3)
    assert [dict(op) for op in outcome.note_ops] == [{"op": "add", "text": "n"}] * 2


async def test_agentic_fold_reads_the_history_the_notes_and_the_previous_summary() -> None:
    _, llm = await run_fold(by_round(reply("done")), notes=[note(4, "likes primes")])
    prompt = llm.requests[0].messages[0].text
    for piece in ("earlier: the user likes numbers", "#4: likes primes", "--- send 0 ---",
                  "user: What is 6 x 7?", "assistant: 48", "--- send 1 ---"):
        assert piece in prompt


async def test_bad_tool_input_is_answered_with_an_error() -> None:
    outcome, llm = await run_fold(by_round(
        call_tools(("note_add", "{not json"), ("note_add", "[1, 2]"), ("shout", {}),
                   ("write_summary", {"summary": "  "})),
        call_tool("write_summary", {"summary": " the summary "})))
    assert results_of(llm.requests[1]) == [
        ("note_add", "Error: the arguments are not valid JSON.", True),
        ("note_add", "Error: the arguments must be a JSON object.", True),
        ("shout", "Error: unknown tool 'shout'.", True),
        ("write_summary", "Error: summary must be non-empty text.", True)]
    assert (outcome.summary, list(outcome.note_ops), outcome.calls) == ("the summary", [], 2)


async def test_note_bounds_are_enforced() -> None:
    outcome, llm = await run_fold(by_round(
        call_tools(("note_add", {"text": "x" * 21}), ("note_add", {"text": " kept "}),
                   ("note_add", {"text": "one too many"}), ("note_update", {"note_id": 9,
                                                                           "text": "t"}),
                   ("note_delete", {"note_id": 0}), ("note_update", {"note_id": 0,
                                                                     "text": "gone"})),
        call_tool("write_summary", {"summary": "s"})), notes=[note(0, "old")])
    assert results_of(llm.requests[1]) == [
        ("note_add", "Error: a note may have at most 20 characters, not 21", True),
        ("note_add", "Note saved.", False),
        ("note_add", "Error: there are already 2 notes; update or delete one", True),
        ("note_update", "Error: there is no note #9", True),
        ("note_delete", "Note #0 deleted.", False),
        ("note_update", "Error: there is no note #0", True)]
    assert [dict(op) for op in outcome.note_ops] == [{"op": "add", "text": "kept"},
                                                      {"op": "delete", "note_id": 0}]


async def test_write_summary_ends_the_fold() -> None:
    outcome, llm = await run_fold(by_round(
        call_tools(("note_add", {"text": "fact"}), ("write_summary", {"summary": "S"})),
        call_tool("note_add", {"text": "never asked for"})))
    assert (outcome.summary, outcome.calls, len(llm.requests)) == ("S", 1, 1)
    assert [dict(op) for op in outcome.note_ops] == [{"op": "add", "text": "fact"}]


async def test_a_text_answer_ends_the_fold() -> None:
    outcome, _ = await run_fold(by_round(reply("   ")))
    assert (outcome.summary, outcome.calls) == ("(nothing worth keeping)", 1)


async def test_agentic_fold_requests_have_unique_call_ids() -> None:
    def script(request: LLMRequest) -> Turn:
        if request.metadata["round"] < 2:
            return Turn(tool_calls=(ScriptedCall("note_add", {"text": "n"}, id="call_0"),))
        return reply("summary")

    await run_fold(script)


# -- whose model folds ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["summary", "agentic"])
async def test_a_strategy_uses_its_own_llm(store: Store, strategy: str) -> None:
    folder = ScriptedLLM(by_round(reply("written by the folding model")))
    fold = (LLMSummaryFold(folder, max_summary_tokens=123) if strategy == "summary"
            else AgenticFold(1, llm=folder, max_summary_tokens=123))
    plans = [SendPlan(f"q{i}", (Step(text="an answer that takes some room " * 4),))
             for i in range(8)]
    model = PlannedModel(plans)
    loop = StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=AgentLoopConfig(
        fold_strategy=fold, context_budget_tokens=450))
    sid = await loop.new_session()
    for plan in plans:
        await loop.send(plan.text, session_id=sid)
    folds = await store.list_folds(sid)
    assert folds and all(f.summary == "written by the folding model" for f in folds)
    assert not any(is_fold_request(r) for r in model.requests)
    assert len(folder.requests) == len(folds)
    for request in folder.requests:
        assert is_fold_request(request) and request.max_output_tokens == 123
        assert request.metadata["session_id"] == sid
        check_both(request)


async def test_a_boolean_note_id_does_not_wedge_the_session(store: Store) -> None:
    def script(request: LLMRequest) -> Turn:
        usage = Usage(input_tokens=request_tokens(request))
        if is_fold_request(request):
            if request.metadata["round"] == 0:
                return call_tool("note_update", {"note_id": True, "text": "t"})
            return call_tool("write_summary", {"summary": "s"})
        if request.messages[-1].text == "remember two things":
            return call_tools(("note_add", {"text": "zero"}), ("note_add", {"text": "one"}))
        return Turn(text="a long enough answer " * 6, usage=usage)

    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, config=AgentLoopConfig(
        fold_strategy=AgenticFold(1), context_budget_tokens=450, notes=NoteLimits()))
    sid = await loop.new_session()
    await loop.send("remember two things", session_id=sid)
    for i in range(6):
        await loop.send(f"question {i}", session_id=sid)
    folds = await store.list_folds(sid)
    assert folds and all(f.status == "done" for f in folds)
