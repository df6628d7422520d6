"""A session that needs a fold, a hostile model doing the folding, and the checks after.

:func:`session_needing_fold` fills a session (through a loop without folds) so that the
next send of a loop with a fold strategy and a small budget folds; the fold's model is a
:class:`~tests.loop.hostile.HostileLLM` playing whatever the test queues. The loop's own
model is a plain :class:`~power_loop.ScriptedLLM`. :func:`check_after_fold` asserts what
must hold after any hostile fold: history valid, lease free, journal consistent (never
left ``started``, only the last entry ``failed``, summaries bounded, notes within their
bounds), and the next send works.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    Event,
    FoldStrategy,
    LLMRequest,
    LLMSummaryFold,
    NoteLimits,
    PowerLoopError,
    ScriptedLLM,
    SendPendingError,
    SendResult,
    StatefulAgentLoop,
    Store,
    Usage,
)
from power_loop.llm.scripted import Turn
from tests.context.support import is_fold_request, request_tokens
from tests.loop.hostile import SEND_TIMEOUT, HostileLLM, assert_history_valid
from tests.loop.support import lease_is_free

BUDGET = 450
FILL_SENDS = 6
ANSWER = "an answer that takes some room in the context " * 5
LIMITS = NoteLimits(max_notes=3, max_chars=40)
MAX_SUMMARY_CHARS = 12_000
"""The longest summary a fold of this small history may keep (it replaces ~1,000 tokens)."""


@dataclass
class Folding:
    """A session whose next send folds, the loop sending it, and what it observed."""

    loop: StatefulAgentLoop
    folder: HostileLLM
    sid: str
    events: list[Event]


def strategy(kind: str, folder: HostileLLM) -> FoldStrategy:
    if kind == "summary":
        return LLMSummaryFold(folder)
    return AgenticFold(1, llm=folder, max_rounds=3)


async def session_needing_fold(store: Store, kind: str, folder: HostileLLM,
                               fold: FoldStrategy | None = None) -> Folding:
    """A session of FILL_SENDS sends, and a loop whose next send on it must fold."""
    model = ScriptedLLM(lambda request: ANSWER)
    filler = StatefulAgentLoop(llm=model, store=store)
    sid = await filler.new_session()
    for i in range(FILL_SENDS):
        await filler.send(f"question {i}", session_id=sid)
    events: list[Event] = []
    loop = StatefulAgentLoop(llm=ScriptedLLM(_fine), store=store,
                             config=AgentLoopConfig(
                                 fold_strategy=fold or strategy(kind, folder),
                                 context_budget_tokens=BUDGET, notes=LIMITS,
                                 on_event=events.append))
    return Folding(loop, folder, sid, events)


def _fine(request: LLMRequest) -> Turn:
    # Usage as the loop estimates it keeps its calibration at 1: every send over the
    # budget folds.
    return Turn(text="fine", usage=Usage(input_tokens=request_tokens(request)))


async def send_bounded(folding: Folding, text: str = "Hello") -> SendResult | PowerLoopError:
    """Send; return the result or the PowerLoopError (anything else fails the test)."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            return await folding.loop.send(text, session_id=folding.sid)
    except PowerLoopError as exc:
        return exc


async def hung_send(folding: Folding, streaming: asyncio.Event) -> BaseException:
    """Send, wait until the fold's model is streaming, cancel the send."""
    task = asyncio.create_task(folding.loop.send("Hello", session_id=folding.sid))
    async with asyncio.timeout(SEND_TIMEOUT):
        await streaming.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as exc:
        return exc
    raise AssertionError("a cancelled send returned")


async def assert_journal_consistent(store: Store, sid: str) -> list[str]:
    """The fold journal holds whole folds only; return the statuses."""
    folds = await store.list_folds(sid)
    assert [f.fold_index for f in folds] == list(range(len(folds)))
    statuses = [f.status for f in folds]
    assert all(s == "done" for s in statuses[:-1]), statuses
    assert not statuses or statuses[-1] in ("done", "failed"), "a fold left half-written"
    for fold in folds:
        assert fold.finished_at is not None
        if fold.status == "done":
            assert isinstance(fold.summary, str) and fold.summary.strip()
            assert len(fold.summary) <= MAX_SUMMARY_CHARS
            assert 0 <= fold.first_send < fold.end_send
        else:
            error = fold.usage["error"]
            assert error["code"] and error["type"] and len(error["message"]) <= 2_003
    latest = await store.latest_fold(sid)
    assert latest is None or latest.status == "done"
    notes = await store.list_notes(sid)
    assert len(notes) <= LIMITS.max_notes
    assert all(0 < len(n.text) <= LIMITS.max_chars for n in notes)
    return statuses


async def check_after_fold(store: Store, folding: Folding,
                           outcome: SendResult | BaseException) -> str:
    """Assert the session is sound after a hostile fold; return how the send ended."""
    sid, loop = folding.sid, folding.loop
    await assert_history_valid(store, sid)
    assert await lease_is_free(store, sid)
    statuses = await assert_journal_consistent(store, sid)
    session = await store.get_session(sid)
    ended = ("done" if isinstance(outcome, SendResult)
             else "cancelled" if isinstance(outcome, asyncio.CancelledError) else "error")
    if session.pending_send is not None:
        assert isinstance(outcome, PowerLoopError), outcome
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await loop.send("next", session_id=sid)
        except SendPendingError:
            pass
        else:  # pragma: no cover - the assertion explains
            raise AssertionError("a pending send let the next send through")
        assert await loop.abort_pending(sid)
        ended = "pending, aborted"
    async with asyncio.timeout(SEND_TIMEOUT):
        after = await loop.send("are you there?", session_id=sid)
    assert after.status == "done" and after.final_text == "fine"
    await assert_history_valid(store, sid)
    await assert_journal_consistent(store, sid)
    assert all(is_fold_request(r) for r in folding.folder.requests)
    return f"{ended}; journal {'/'.join(statuses) or 'empty'}"
