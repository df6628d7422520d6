"""A session worth inspecting, made by a real :class:`StatefulAgentLoop` run.

Send 0: the model calls ``lookup`` and a tool that does not exist (both with hostile
arguments, the second with a hostile name), then a sub-agent, then answers. Send 1: the
model calls ``wire_money``, which needs approval: the send waits. A timer is scheduled
and a one-step workflow runs. Every text the model, the user, a tool or the application
writes comes from ``texts``, so a test can fill it with hostile strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from power_loop import (
    AgentLoopConfig,
    AgentSpec,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Turn,
    call_tool,
    call_tools,
    reply,
    tool,
)
from power_loop.context import NoteLimits
from power_loop.store import Store


@dataclass(frozen=True, slots=True)
class Texts:
    """What the scenario writes; every field may be hostile."""

    session_id: str
    metadata: str
    question: str
    argument: str
    tool_name: str
    task: str
    child_answer: str
    answer: str
    payee: str
    timer: str
    workflow_input: str
    note: str
    summary: str


@dataclass(frozen=True, slots=True)
class Made:
    """The ids of what the scenario made."""

    session_id: str
    child_id: str
    workflow_id: str
    timer_id: str
    wait_id: str


def _model(texts: Texts) -> Callable[[LLMRequest], Turn]:
    def model(request: LLMRequest) -> Turn:
        last = request.messages[-1]
        if request.system == "You help.":
            return reply(f"{texts.child_answer} / {request.messages[0].text}")
        if last.role == "user":
            if last.text == texts.payee:
                return call_tool("wire_money", {"to": texts.payee, "amount": 40})
            return call_tools(("lookup", {"q": texts.argument}),
                              (texts.tool_name, {"x": texts.argument}),
                              ("note_add", {"text": texts.note}))
        names = [r.name for m in request.messages for r in m.tool_results]
        if "spawn_agent" in names or "wire_money" in names:
            return reply(texts.answer)
        return call_tool("spawn_agent", {"agent": "helper", "task": texts.task})
    return model


@tool(safe_to_repeat=True)
def lookup(q: str) -> str:
    """Look something up.

    Args:
        q: What to look for.
    """
    return f"found: {q}"


@tool(requires_approval=True)
def wire_money(to: str, amount: int) -> str:
    """Wire money.

    Args:
        to: Who receives it.
        amount: How much.
    """
    return f"wired {amount} to {to}"


def make_loop(store: Store, texts: Texts) -> StatefulAgentLoop:
    helper = AgentSpec("helper", "Helps.", "You help.")
    return StatefulAgentLoop(llm=ScriptedLLM(_model(texts)), store=store,
                             tools=[lookup, wire_money], agents=[helper],
                             config=AgentLoopConfig(notes=NoteLimits()))


async def _fold(store: Store, session_id: str, summary: str) -> None:
    """Journal a fold of send 0, as a fold strategy would have (the loop folds only past
    a token budget, which a scripted model does not reach)."""
    claim = await store.claim_session(session_id, owner="folder", ttl=30)
    try:
        end_seq = (await store.get_session(session_id)).next_seq
        await store.begin_fold(session_id, epoch=claim.lease.epoch, fold_index=0,
                               strategy="summary", first_send=0, end_send=1, end_seq=end_seq)
        await store.commit_fold(session_id, epoch=claim.lease.epoch, fold_index=0,
                                summary=summary, note_ops=[], usage={})
    finally:
        await store.release_lease(claim.lease)


async def make(store: Store, texts: Texts) -> Made:
    """Run the scenario on ``store``."""
    async with make_loop(store, texts) as loop:
        sid = await loop.new_session(session_id=texts.session_id,
                                     metadata={"note": texts.metadata})
        await loop.send(texts.question, sid)
        await _fold(store, sid, texts.summary)
        waiting = await loop.send(texts.payee, sid)
        assert waiting.status == "waiting", waiting
        tree = await loop.session_tree(sid)
        (child,) = tree.children
        timer_id = await loop.schedule(sid, texts.timer, delay=3600)
        workflow_id = await loop.start_workflow(
            {"agent": "helper", "input": "{{input.task}}"}, {"task": texts.workflow_input})
        await loop.wait_workflow(workflow_id)
    return Made(sid, child.session_id, workflow_id, timer_id, waiting.waiting[0].wait_id)


PLAIN = Texts(session_id="trip-42", metadata="customer 7", question="Plan my trip.",
              argument="Lyon", tool_name="no_such_tool", task="Find a hotel.",
              child_answer="Hotel Dieu", answer="All planned.", payee="Pay Bob.",
              timer="Check the refund.", workflow_input="Summarise the trip.",
              note="Bob prefers trains.", summary="Planned a trip to Lyon.")
