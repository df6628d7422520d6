"""What each kind of fold failure becomes, case by case.

A fold's model call is held to the LLMService contract (its failures become LLMError,
a broken stream LLMResponseError, with a message saying the send goes on unfolded); the
agentic fold answers the model's mistakes with tool errors of bounded size; a strategy's
outcome is checked before it is committed; and through a loop a failed fold is journaled
``failed``, reported by a ``FoldFailed`` event and a WARNING, and the send goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from power_loop import (
    AgenticFold,
    EstimatingCounter,
    FoldError,
    FoldFailed,
    FoldOutcome,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMResponseError,
    Message,
    NoteLimits,
    StopReason,
    Store,
    TextPart,
    Usage,
)
from power_loop.context.fold import FOLD_FAILED, complete
from power_loop.context.outcome import EMPTY_SUMMARY, SUMMARY_CUT, checked_outcome
from power_loop.llm.scripted import call_tools
from power_loop.llm.service import TextDelta
from tests.context.hostile_fold import check_after_fold, send_bounded, session_needing_fold
from tests.context.test_folds import results_of, run_fold
from tests.loop.hostile import Behaviour, HostileLLM, answer, raising, yielding
from tests.loop.test_hostile_model_property import NotAnException, Unprintable

REQUEST = LLMRequest(messages=(Message.user("fold this"),))


async def fold_call(behaviour: Behaviour) -> Any:
    return await complete(HostileLLM([behaviour]), REQUEST)


@pytest.mark.parametrize("error", [
    ValueError("bad"), Unprintable(), ExceptionGroup("g", [ValueError("a")]), GeneratorExit(),
    NotAnException("odd"), StopIteration(), asyncio.CancelledError()],
    ids=lambda e: type(e).__name__)
async def test_any_failure_of_the_fold_model_is_an_llm_error(error: BaseException) -> None:
    with pytest.raises(LLMError) as raised:
        await fold_call(raising(error, [TextDelta("partial")]))
    assert type(raised.value) is LLMError
    assert raised.value.message.endswith(FOLD_FAILED) and "pending" not in raised.value.message


@pytest.mark.parametrize("behaviour", [
    yielding([]), yielding(["text"]), yielding([TextDelta(5)]),  # type: ignore[arg-type]
    yielding([LLMResponse(Message("assistant", ()), Usage(), StopReason.END_TURN),
              TextDelta("late")]),
    answer(Message("user", (TextPart("hi"),))), answer("hello"),
], ids=["nothing", "a str", "TextDelta(int)", "after the response", "role user", "a str answer"])
async def test_a_broken_fold_stream_is_an_llm_response_error(behaviour: Behaviour) -> None:
    with pytest.raises(LLMResponseError) as raised:
        await fold_call(behaviour)
    assert raised.value.message.endswith(FOLD_FAILED)


async def test_a_stream_that_is_no_iterator_is_an_llm_error() -> None:
    with pytest.raises(LLMError, match="TypeError"):
        await fold_call(lambda request: None)  # type: ignore[arg-type,return-value]


async def test_an_odd_fold_answer_is_normalized() -> None:
    response = await fold_call(answer(Message("assistant", (TextPart("s\ud83d\ude00"),)),
                                      usage=Usage(-5, 10**30), stop="weird"))
    assert response.message.text == "s\U0001f600"
    assert response.usage.input_tokens == 0 and response.stop_reason is StopReason.END_TURN


async def test_cancelling_the_fold_cancels_it() -> None:
    started = asyncio.Event()

    async def hang(request: LLMRequest) -> AsyncIterator[Any]:
        started.set()
        await asyncio.Event().wait()
        yield TextDelta("never")

    task = asyncio.create_task(fold_call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_agentic_fold_answers_deep_huge_and_unknown_calls_with_short_errors() -> None:
    deep = '{"text": ' + "[" * 50_000 + "]" * 50_000 + "}"
    _, llm = await run_fold(lambda request: call_tools(
        ("note_add", deep), ("n" * 10_000, "{}"),
        ("note_delete", json.dumps({"note_id": "x" * 100_000})),
        ("note_delete", json.dumps({"note_id": 10**25})),
        ("note_add", json.dumps({"text": "t" * 100_000}))), max_rounds=2)
    results = results_of(llm.requests[1])
    assert [is_error for _, _, is_error in results] == [True] * 5
    assert results[0][1] == "Error: the arguments are not valid JSON."
    assert results[1][1] == f"Error: unknown tool {'n' * 64 + '...'!r}."
    assert results[2][1] == "Error: a note id is an integer, not a str"
    assert results[3][1] == "Error: there is no note with that id"
    assert all(len(content) < 200 for _, content, _ in results)


def check(outcome: object, max_tokens: int = 100) -> FoldOutcome:
    return checked_outcome(outcome, AgenticFold(), notes=(), limits=NoteLimits(max_notes=2),
                           counter=EstimatingCounter(), max_summary_tokens=max_tokens)


def test_a_summary_is_bounded_stored_as_read_back_and_never_empty() -> None:
    clipped = check(FoldOutcome("w" * 100_000)).summary
    assert clipped.endswith(SUMMARY_CUT) and len(clipped) <= 400
    assert check(FoldOutcome("  \n ")).summary == EMPTY_SUMMARY
    assert check(FoldOutcome("a\x00\ud83d\ude00\ud800")).summary == "a\x00\U0001f600\ud800"


@pytest.mark.parametrize(("outcome", "problem"), [
    ("text", "not a FoldOutcome"), (FoldOutcome(5), "no summary text"),  # type: ignore
    (FoldOutcome("s", {"op": "add"}), "not a list"),  # type: ignore[arg-type]
    (FoldOutcome("s", [1]), "not a mapping"),  # type: ignore[list-item]
    (FoldOutcome("s", [{"op": "drop"}]), "'add', 'update' or 'delete'"),
    (FoldOutcome("s", [{"op": "add", "text": "n"}] * 3), "already 2 notes"),
    (FoldOutcome("s", [{"op": "add", "text": "x" * 1_001}]), "at most 1000 characters"),
    (FoldOutcome("s", [{"op": "update", "note_id": 10**5000, "text": "t"}]), "with that id"),
])
def test_an_unusable_outcome_is_a_fold_error(outcome: object, problem: str) -> None:
    with pytest.raises(FoldError, match="fold") as raised:
        check(outcome)
    assert problem in raised.value.message and raised.value.code == "fold_failed"


def test_token_counts_are_made_whole() -> None:
    outcome = check(FoldOutcome("s", (), "usage", -1))  # type: ignore[arg-type]
    assert (outcome.usage, outcome.calls) == (Usage(), 0)


async def test_a_failed_fold_is_journaled_reported_and_the_send_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    folder = HostileLLM([raising(Unprintable())])
    folding = await session_needing_fold(store, "summary", folder)
    with caplog.at_level(logging.WARNING, logger="power_loop.context"):
        outcome = await send_bounded(folding)
    assert not isinstance(outcome, BaseException) and outcome.status == "done"
    [failed] = [e for e in folding.events if isinstance(e, FoldFailed)]
    assert isinstance(failed.error, LLMError) and failed.fold_index == 0
    [fold] = await store.list_folds(folding.sid)
    assert fold.status == "failed" and fold.usage["error"]["code"] == "llm_error"
    assert "could not be rendered" in fold.usage["error"]["message"]
    assert any("fold #0" in r.getMessage() and "unfolded" in r.getMessage()
               for r in caplog.records)
    assert await check_after_fold(store, folding, outcome) == "done; journal failed"
    assert [f.status for f in await store.list_folds(folding.sid)] == ["done"]


async def test_a_scripted_fold_model_still_folds(store: Store) -> None:
    folding = await session_needing_fold(store, "summary", HostileLLM())
    assert not isinstance(await send_bounded(folding), BaseException)
    folds = await store.list_folds(folding.sid)
    assert [(f.status, f.summary) for f in folds] == [("done", "fine")]
