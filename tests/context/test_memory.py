"""Cross-session memory rides at the request's tail, never inside the cached prefix."""

from __future__ import annotations

from itertools import pairwise

from power_loop import (
    AgentLoopConfig,
    KeywordMemory,
    LLMRequest,
    MemoryProvider,
    SendResult,
    StatefulAgentLoop,
    Store,
)
from tests.context.planned import PlannedModel, SendPlan, Step
from tests.context.providers import check_both
from tests.context.support import EchoMemory, echo, layout


def make_loop(store: Store, model: PlannedModel, memory: MemoryProvider,
              budget: int = 77) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=AgentLoopConfig(
        memory=memory, memory_budget_tokens=budget))


def prefix_bytes(request: LLMRequest, length: int) -> list[bytes]:
    return [LLMRequest(messages=(m,)).canonical_bytes() for m in request.messages[:length]]


async def test_memory_from_another_session_is_shown_after_the_prefix(store: Store) -> None:
    model = PlannedModel([SendPlan("Tell me about giraffes", (Step(text="Giraffes are tall."),)),
                          SendPlan("hello", (Step(text="hi"),)),
                          SendPlan("And giraffes?", (Step(text="Still tall."),))])
    memory = KeywordMemory()
    loop = make_loop(store, model, memory)
    first, second = await loop.new_session(), await loop.new_session()
    await loop.send("Tell me about giraffes", session_id=first)
    await loop.send("hello", session_id=second)
    await loop.send("And giraffes?", session_id=second)
    request = model.requests[-1]
    check_both(request)
    parts = layout(request)
    assert parts.context is not None
    assert parts.context.text == ("[power_loop context]\nFrom other conversations:\n"
                                  "- Q: Tell me about giraffes A: Giraffes are tall.")
    assert request.messages[request.cache_prefix] is parts.context
    assert [m.text for m in parts.finished] == ["hello", "hi"]
    assert [m.text for m in parts.current] == ["And giraffes?"]


async def test_memory_is_asked_with_the_send_and_the_reserved_budget(store: Store) -> None:
    model = PlannedModel([SendPlan("what now?", (Step(text="this"),))])
    memory = EchoMemory()
    loop = make_loop(store, model, memory, budget=77)
    sid = await loop.new_session()
    await loop.send("what now?", session_id=sid)
    assert memory.queries == [(sid, "what now?", 77)]


async def test_the_prefix_stays_byte_stable_while_memory_changes(store: Store) -> None:
    texts = [f"question {i} about topic {i * 7}" for i in range(5)]
    model = PlannedModel([SendPlan(t, (Step(text=f"answer {i}"),)) for i, t in enumerate(texts)])
    loop = make_loop(store, model, EchoMemory())
    sid = await loop.new_session()
    for text in texts:
        await loop.send(text, session_id=sid)
    requests = model.requests
    contexts = [layout(r).context for r in requests]
    assert len({c.text for c in contexts if c is not None}) == len(texts)
    for before, after in pairwise(requests):
        assert after.cache_prefix == before.cache_prefix + 2
        assert prefix_bytes(after, before.cache_prefix) == prefix_bytes(before,
                                                                         before.cache_prefix)
        assert not any(m.meta.get("context") for m in after.messages[:after.cache_prefix])


class ForgetfulMemory(EchoMemory):
    """Recalls fine; fails to learn."""

    async def remember(self, session_id: str, result: SendResult) -> None:
        raise RuntimeError("the memory index is down")


async def test_a_failing_memory_does_not_fail_a_finished_send(store: Store) -> None:
    model = PlannedModel([SendPlan("hi", (Step(text="hello"),))])
    loop = make_loop(store, model, ForgetfulMemory())
    sid = await loop.new_session()
    result = await loop.send("hi", session_id=sid)
    assert (result.status, result.final_text) == ("done", "hello")
    assert (await store.get_session(sid)).pending_send is None


class UnreachableMemory(EchoMemory):
    """Its index is down: recall fails."""

    async def recall(self, session_id: str, query: str, *, budget_tokens: int) -> str | None:
        raise RuntimeError("the memory index is down")


async def test_a_failing_memory_recall_does_not_fail_the_send(store: Store) -> None:
    model = PlannedModel([SendPlan("hi", (Step(text="hello"),))])
    loop = make_loop(store, model, UnreachableMemory())
    result = await loop.send("hi", session_id=await loop.new_session())
    assert (result.status, result.final_text) == ("done", "hello")
    assert layout(model.requests[-1]).context is None
