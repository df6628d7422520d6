"""The fold journal: a fold left ``started`` is redone by the next send, exactly once.

A crash between ``begin_fold`` and its commit leaves a ``started`` row (made here with the
store's own operations, under a lease of a "crashed" holder); a fold whose model fails is
journaled ``failed`` and its send goes on unfolded. Requests ignore both; the next send
that needs a fold redoes it under the same index and commits it: one ``done`` fold per
index, never a second one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from power_loop import (
    AgentLoopConfig,
    Event,
    FoldFailed,
    FoldFinished,
    FoldStarted,
    LLMRequest,
    LLMSummaryFold,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
)
from power_loop.llm.service import StreamItem
from tests.context.planned import PlannedModel, SendPlan, Step
from tests.context.support import ModelDown, echo, layout, summary_text

SMALL = 400


def plans(count: int) -> list[SendPlan]:
    return [SendPlan(f"question {i}", (Step(text=f"answer {i} " + "words " * 20),))
            for i in range(count)]


def make_loop(store: Store, model: PlannedModel, budget: int,
              fold: LLMSummaryFold | None = None) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=AgentLoopConfig(
        fold_strategy=fold or LLMSummaryFold(), context_budget_tokens=budget))


async def leave_fold_started(store: Store, sid: str) -> None:
    """What a process killed between begin_fold and the fold's commit leaves behind."""
    claim = await store.claim_session(sid, owner="crashed-process", ttl=30)
    end = await store.get_send(sid, 2)
    await store.begin_fold(sid, epoch=claim.lease.epoch, fold_index=0, strategy="llm_summary",
                           first_send=0, end_send=2, end_seq=end.first_seq)
    assert await store.release_lease(claim.lease)


async def test_a_started_fold_is_redone_and_committed_once(store: Store) -> None:
    model = PlannedModel(plans(12))
    roomy = make_loop(store, model, 1_000_000)
    sid = await roomy.new_session()
    for i in range(5):
        await roomy.send(f"question {i}", session_id=sid)
    await leave_fold_started(store, sid)
    assert [(f.fold_index, f.status) for f in await store.list_folds(sid)] == [(0, "started")]
    assert await store.latest_fold(sid) is None
    await roomy.send("question 5", session_id=sid)
    assert layout(model.requests[-1]).summary is None, "a started fold is not in effect"

    tight = make_loop(store, model, SMALL)
    for i in range(6, 12):
        await tight.send(f"question {i}", session_id=sid)
    folds = await store.list_folds(sid)
    assert [f.fold_index for f in folds] == list(range(len(folds))) and len(folds) >= 2
    assert all(f.status == "done" for f in folds)
    redone = folds[0]
    assert redone.first_send == 0 and redone.summary.startswith("fold 0 read sends 0,")
    fold_calls = [r.metadata["fold_index"] for r in model.requests
                  if r.metadata.get("purpose") == "fold"]
    assert fold_calls == list(range(len(folds)))
    assert summary_text(layout(model.requests[-1]).summary or
                        pytest.fail("the last request has no summary")) == folds[-1].summary


class FailsOnce:
    """A fold model whose first call fails (the fold is then journaled ``failed``)."""

    def __init__(self) -> None:
        self.failed = False
        self.inner = ScriptedLLM(lambda request: "the folded summary")

    @property
    def model(self) -> str:
        return "fails-once"

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        if not self.failed:
            self.failed = True
            raise ModelDown("the folding model is down")
        async for item in self.inner.stream(request):
            yield item


async def test_a_failed_fold_is_journaled_and_the_next_send_redoes_it(store: Store) -> None:
    model = PlannedModel(plans(12))
    folder = FailsOnce()
    events: list[Event] = []
    loop = StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=AgentLoopConfig(
        fold_strategy=LLMSummaryFold(folder), context_budget_tokens=SMALL,
        on_event=events.append))
    sid = await loop.new_session()
    failed_at = None
    for i in range(12):
        events.clear()
        result = await loop.send(f"question {i}", session_id=sid)
        assert result.status == "done", "a failed fold never fails the send"
        failures = [e for e in events if isinstance(e, FoldFailed)]
        if failures:
            failed_at = i
            assert isinstance(failures[0].error, ModelDown)
            assert [(f.fold_index, f.status) for f in await store.list_folds(sid)] == [
                (0, "failed")]
            assert (await store.list_folds(sid))[0].usage["error"]["code"] == ModelDown.code
            assert await store.latest_fold(sid) is None
            assert layout(model.requests[-1]).summary is None, "the send went on unfolded"
            break
    assert failed_at is not None, "the session should need a fold"
    assert (await store.get_session(sid)).pending_send is None
    events.clear()
    result = await loop.send(f"question {failed_at + 1}", session_id=sid)
    assert result.status == "done"
    folds = await store.list_folds(sid)
    fold_events = [(type(e), e.fold_index) for e in events
                   if isinstance(e, (FoldStarted, FoldFinished))]
    assert fold_events == [(kind, f.fold_index) for f in folds
                           for kind in (FoldStarted, FoldFinished)]
    assert [(f.fold_index, f.status, f.summary) for f in folds] == [
        (i, "done", "the folded summary") for i in range(len(folds))]
    assert len(folder.inner.requests) == len(folds) >= 1
