"""The fold decision: estimates, calibration, what is reserved, and what must fit.

The loop folds when ``estimate x calibration + memory reserve`` exceeds
``context_budget_tokens``, where the estimate covers the system prompt, the tools, the
rendered history, the agent's notes and the current send so far. Each stored answer
keeps the estimate of its request (``input_estimate``), and the provider's own count of
that request calibrates later estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    EstimatingCounter,
    FoldStrategy,
    LLMSummaryFold,
    Message,
    NoteLimits,
    SendResult,
    StatefulAgentLoop,
    Store,
    Usage,
)
from power_loop.context.tokens import calibration, count_tools
from power_loop.llm.messages import decode_message
from tests.context.planned import Call, PlannedModel, SendPlan, Step
from tests.context.support import (
    COUNTER,
    echo,
    is_fold_request,
    layout,
    message_tokens,
    one_message_tokens,
    request_tokens,
)

SYSTEM = "Be brief."


def plans(count: int, words: int = 12) -> list[SendPlan]:
    return [SendPlan(f"q{i}", (Step(calls=(Call("echo", {"text": f"t{i}"}),)),
                               Step(text="word " * words)))
            for i in range(count)]


def make_loop(store: Store, model: PlannedModel, budget: int | None, *,
              fold: FoldStrategy | None = None, **options: object) -> StatefulAgentLoop:
    strategy = (fold or LLMSummaryFold()) if budget is not None else None
    config = AgentLoopConfig(system_prompt=SYSTEM, fold_strategy=strategy,
                             context_budget_tokens=budget, **options)  # type: ignore[arg-type]
    return StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=config)


async def next_estimate(loop: StatefulAgentLoop, sid: str, text: str) -> int:
    """The loop's estimate of the next send's first request (verbatim, nothing folded)."""
    log = [decode_message(r.role, r.body) for r in await loop.store.read_messages(sid)]
    return (COUNTER.count_text(SYSTEM) + count_tools(COUNTER, loop.tools.specs())
            + message_tokens(log) + one_message_tokens(Message.user(text)))


async def folds_after(loop: StatefulAgentLoop, sid: str, text: str) -> int:
    await loop.send(text, session_id=sid)
    return len(await loop.store.list_folds(sid))


async def test_each_answer_keeps_the_estimate_of_its_request(store: Store) -> None:
    model = PlannedModel(plans(3))
    loop = make_loop(store, model, 1_000_000)
    sid = await loop.new_session()
    for i in range(3):
        await loop.send(f"q{i}", session_id=sid)
    answers = [decode_message(r.role, r.body) for r in await store.read_messages(sid)
               if r.role == "assistant"]
    assert len(answers) == len(model.requests) == 6
    for answer, request in zip(answers, model.requests, strict=True):
        assert answer.meta["input_estimate"] == request_tokens(request)
        assert Usage.from_json(answer.meta["usage"]).input_tokens == request_tokens(request)


async def test_no_estimate_is_kept_without_a_budget(store: Store) -> None:
    model = PlannedModel(plans(1))
    loop = make_loop(store, model, None)
    result = await loop.send("q0", session_id=await loop.new_session())
    assert all("input_estimate" not in m.meta for m in result.messages)


def answered(estimate: int, usage: Usage) -> Message:
    return Message.assistant("a", input_estimate=estimate, usage=usage.to_json())


@pytest.mark.parametrize(("history", "factor"), [
    ([], 1.0),
    ([Message.user("q")], 1.0),
    ([answered(100, Usage(input_tokens=150))], 1.5),
    ([answered(100, Usage(input_tokens=10, cache_read_tokens=70, cache_write_tokens=20))],
     1.0),
    ([answered(100, Usage(input_tokens=1_000))], 3.0),
    ([answered(100, Usage(input_tokens=10))], 0.5),
    ([answered(100, Usage())], 1.0),
    ([answered(100, Usage(input_tokens=200)), answered(100, Usage(input_tokens=80))], 0.8),
    ([answered(100, Usage(input_tokens=200)), Message.assistant("no estimate")], 2.0),
])
def test_calibration_is_the_latest_actual_over_estimate(history: Sequence[Message],
                                                        factor: float) -> None:
    assert calibration(history) == pytest.approx(factor)


@pytest.mark.parametrize(("scale", "folds"), [(1.0, False), (2.0, True)])
async def test_the_providers_count_scales_later_estimates(store: Store, scale: float,
                                                          folds: bool) -> None:
    """The same history and budget fold only when the provider counted more than we did."""
    model = PlannedModel(plans(6), scale=scale)
    roomy = make_loop(store, model, 1_000_000)
    sid = await roomy.new_session()
    for i in range(5):
        await roomy.send(f"q{i}", session_id=sid)
    budget = await next_estimate(roomy, sid, "q5") + 10
    assert (await folds_after(make_loop(store, model, budget), sid, "q5") > 0) == folds


class NoMemory:
    """A MemoryProvider that never has anything to add."""

    async def recall(self, session_id: str, query: str, *, budget_tokens: int) -> str | None:
        return None

    async def remember(self, session_id: str, result: SendResult) -> None:
        return None


@pytest.mark.parametrize(("memory", "folds"), [(False, False), (True, True)])
async def test_memory_budget_is_reserved_when_deciding_to_fold(store: Store, memory: bool,
                                                               folds: bool) -> None:
    model = PlannedModel(plans(6))
    roomy = make_loop(store, model, 1_000_000)
    sid = await roomy.new_session()
    for i in range(5):
        await roomy.send(f"q{i}", session_id=sid)
    budget = await next_estimate(roomy, sid, "q5") + 50
    tight = make_loop(store, model, budget, memory=NoMemory() if memory else None,
                      memory_budget_tokens=100)
    assert (await folds_after(tight, sid, "q5") > 0) == folds
    assert layout(model.requests[-1]).context is None


async def test_notes_count_when_deciding_to_fold(store: Store) -> None:
    """The notes ride in every request, so they count against the budget."""
    long_note = "a fact worth keeping, " * 30
    model = PlannedModel([SendPlan("remember", (Step(calls=(Call("note_add",
                                                                {"text": long_note}),)),
                                                Step(text="noted"))), *plans(6)])
    limits = NoteLimits(max_chars=2_000)
    roomy = make_loop(store, model, 1_000_000, notes=limits)
    sid = await roomy.new_session()
    await roomy.send("remember", session_id=sid)
    for i in range(3):
        await roomy.send(f"q{i}", session_id=sid)
    context = layout(model.requests[-1]).context
    assert context is not None and long_note.strip() in context.text
    budget = await next_estimate(roomy, sid, "q3") + one_message_tokens(context) // 2
    assert await folds_after(make_loop(store, model, budget, notes=limits), sid, "q3") >= 1


async def test_a_large_send_is_folded_until_the_request_fits(store: Store) -> None:
    big = "lorem ipsum " * 700
    model = PlannedModel([*plans(5, words=4),
                          SendPlan("big", (Step(calls=(Call("echo", {"text": big}),)),
                                           Step(text="that was long"))),
                          SendPlan("after", (Step(text="ok"),))])
    budget = 1_500
    loop = make_loop(store, model, budget, fold=AgenticFold(keep_last_sends=4))
    sid = await loop.new_session()
    for text in ["q0", "q1", "q2", "q3", "q4", "big", "after"]:
        await loop.send(text, session_id=sid)
    request = model.requests[-1]
    folds = [r.metadata["fold_index"] for r in model.requests if is_fold_request(r)]
    assert folds  # one fold takes the big send too: keep_last_sends yields to the budget
    parts = layout(request)
    shown = request_tokens(request) - message_tokens(parts.current[1:])
    assert not parts.finished or shown <= budget


def test_estimating_counter() -> None:
    assert EstimatingCounter().count_text("") == 0
    assert EstimatingCounter().count_text("abcde") == 2
    assert EstimatingCounter(chars_per_token=2).count_text("abcde") == 3


async def test_a_summary_fold_leaves_room_for_the_next_send(store: Store) -> None:
    model = PlannedModel(plans(16, words=20))
    roomy = make_loop(store, model, 1_000_000)
    overhead = COUNTER.count_text(SYSTEM) + count_tools(COUNTER, roomy.tools.specs())
    loop = make_loop(store, model, overhead * 2 - overhead // 4)  # tools: 5/8 of the budget
    sid = await loop.new_session()
    folded_at = []
    for i in range(16):
        before = len(await store.list_folds(sid))
        if await folds_after(loop, sid, f"q{i}") > before:
            folded_at.append(i)
    assert len(folded_at) >= 2
    assert all(b - a > 1 for a, b in pairwise(folded_at)), f"folds at sends {folded_at}"
