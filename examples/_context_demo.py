"""Shared by the context examples: a long session on one pairing, narrated briefly."""

from __future__ import annotations

from _common import data_dir, pick_llm

from power_loop import (
    AgentLoopConfig,
    FoldFinished,
    FoldStrategy,
    LLMRequest,
    NoteLimits,
    Representation,
    ScriptedLLM,
    StatefulAgentLoop,
    Turn,
    call_tool,
    call_tools,
    reply,
    tool,
)


@tool(safe_to_repeat=True)
def lookup_order(order_id: str) -> str:
    """Look up an order's status.

    Args:
        order_id: The order id.
    """
    return f"order {order_id}: shipped, arriving Thursday"


def model(request: LLMRequest) -> Turn:
    """A scripted model: answers the user, and folds when asked to."""
    if request.metadata.get("purpose") == "fold":
        if request.tools and request.messages[-1].role == "user":
            return call_tools(("note_add", {"text": "Customer prefers e-mail updates."}),
                              ("write_summary", {"summary": "The customer asked about "
                                                 "several orders; all have shipped."}))
        return reply("The customer asked about several orders; all have shipped.")
    last = request.messages[-1]
    if last.role == "tool":
        return reply(f"Good news: {last.tool_results[0].content}. " + "Details follow. " * 20)
    number = sum(1 for m in request.messages if m.role == "user")
    if "order" in last.text:
        return call_tool("lookup_order", {"order_id": last.text.split()[-1]})
    return reply(f"(answer {number}) " + "Here is a long and careful answer. " * 12)


async def run(name: str, representation: Representation, fold: FoldStrategy, *,
              budget: int = 1_500) -> None:
    config = AgentLoopConfig(representation=representation, fold_strategy=fold,
                             context_budget_tokens=budget, notes=NoteLimits(max_notes=10))
    llm = pick_llm(ScriptedLLM(model))
    folds = []
    async with StatefulAgentLoop(llm=llm, dsn=str(data_dir(name) / "app.db"), config=config,
                                 tools=[lookup_order]) as loop:
        sid = await loop.new_session(system_prompt="You are a support agent.")
        for turn in range(24):
            text = f"where is order A{turn}" if turn % 3 == 0 else f"tell me more ({turn})"
            async for event in loop.stream(text, sid):
                if isinstance(event, FoldFinished):
                    folds.append(event)
        result = await loop.send("thanks!", sid)
        store = loop.store
        journal = await store.list_folds(sid)
        notes = await store.list_notes(sid)
        print(f"{name}: {representation!r} x {fold!r}")
        print(f"  25 sends, {len(journal)} folds; latest covers sends 0-{journal[-1].end_send - 1}"
              if journal else "  25 sends, no fold needed")
        for event in folds[:2]:
            print(f"  fold #{event.fold_index}: {event.summary[:70]!r}, "
                  f"{event.notes_written} note(s) written")
        print(f"  notes: {[n.text for n in notes]}")
        print(f"  last answer used {result.usage.input_tokens} input tokens; "
              f"the log still has every message: {len(await loop.history(sid))}")
