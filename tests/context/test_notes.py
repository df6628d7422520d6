"""Agent notes: the note tools through real sends, their bounds, where notes are shown.

Notes live in the store and ride in the context message right after the cached prefix,
so a change shows in the very next request while the prefix stays byte-identical.
"""

from __future__ import annotations

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    LLMRequest,
    NoteLimits,
    StatefulAgentLoop,
    Store,
)
from tests.context.planned import Call, PlannedModel, SendPlan, Step
from tests.context.providers import check_both
from tests.context.support import echo, is_fold_request, layout

LIMITS = NoteLimits(max_notes=2, max_chars=20)


def make_loop(store: Store, model: PlannedModel, notes: NoteLimits | None = LIMITS,
              **options: object) -> StatefulAgentLoop:
    config = AgentLoopConfig(notes=notes, **options)  # type: ignore[arg-type]
    return StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=config)


def context_of(request: LLMRequest) -> str | None:
    context = layout(request).context
    return None if context is None else context.text


def results_of(request: LLMRequest) -> list[tuple[str, bool]]:
    return [(r.content, r.is_error) for m in layout(request).current for r in m.tool_results]


async def test_note_tools_change_the_next_request_only_after_the_prefix(store: Store) -> None:
    model = PlannedModel([
        SendPlan("before", (Step(text="hello"),)),
        SendPlan("take notes", (
            Step(calls=(Call("note_add", {"text": "alpha"}),)),
            Step(calls=(Call("note_update", {"note_id": 0, "text": "beta"}),)),
            Step(calls=(Call("note_add", {"text": "gamma"}), Call("note_delete", {"note_id": 0}))),
            Step(text="done"))),
        SendPlan("after", (Step(text="ok"),))])
    loop = make_loop(store, model)
    sid = await loop.new_session()
    await loop.send("before", session_id=sid)
    await loop.send("take notes", session_id=sid)
    rounds = model.requests[1:5]
    assert [context_of(r) for r in rounds] == [
        None,
        "[power_loop context]\nYour notes (edit them with note_add, note_update, note_delete):"
        "\n#0: alpha",
        "[power_loop context]\nYour notes (edit them with note_add, note_update, note_delete):"
        "\n#0: beta",
        "[power_loop context]\nYour notes (edit them with note_add, note_update, note_delete):"
        "\n#1: gamma"]
    prefix = rounds[0].messages[:rounds[0].cache_prefix]
    for request in rounds:
        check_both(request)
        assert request.messages[:request.cache_prefix] == prefix
    assert [(n.note_id, n.text) for n in await store.list_notes(sid)] == [(1, "gamma")]
    assert results_of(rounds[-1])[-2:] == [("Saved note #1.", False), ("Note #0 deleted.", False)]
    await make_loop(store, model).send("after", session_id=sid)
    assert context_of(model.requests[-1]) == rounds[-1].messages[rounds[-1].cache_prefix].text


async def test_note_bounds_are_errors_the_model_reads(store: Store) -> None:
    model = PlannedModel([SendPlan("overflow", (
        Step(calls=(Call("note_add", {"text": "x" * 21}), Call("note_add", {"text": "   "}),
                    Call("note_add", {"text": "one"}), Call("note_add", {"text": "two"}))),
        Step(calls=(Call("note_add", {"text": "three"}), Call("note_update",
                                                             {"note_id": 9, "text": "t"}),
                    Call("note_delete", {"note_id": 9}), Call("note_update",
                                                              {"note_id": 0,
                                                               "text": "y" * 21}))),
        Step(text="I tried")))])
    loop = make_loop(store, model)
    sid = await loop.new_session()
    await loop.send("overflow", session_id=sid)
    assert results_of(model.requests[1]) == [
        ("Error: a note may have at most 20 characters, not 21", True),
        ("Error: a note needs non-empty text", True),
        ("Saved note #0.", False), ("Saved note #1.", False)]
    assert results_of(model.requests[2])[4:] == [
        ("Error: the session already has 2 notes (the most allowed is 2); update or delete "
         "one first", True),
        ("Error: there is no note #9", True), ("Error: there is no note #9", True),
        ("Error: a note may have at most 20 characters, not 21", True)]
    assert [(n.note_id, n.text) for n in await store.list_notes(sid)] == [(0, "one"),
                                                                         (1, "two")]


async def test_note_tools_are_offered_only_with_notes(store: Store) -> None:
    names = {"note_add", "note_update", "note_delete"}
    model = PlannedModel([SendPlan("hi", (Step(text="hello"),))])
    for notes, offered in ((LIMITS, True), (None, False)):
        loop = make_loop(store, model, notes)
        await loop.send("hi", session_id=await loop.new_session())
        tools = {t.name for t in model.requests[-1].tools}
        assert (names <= tools) == offered and bool(names & tools) == offered


async def test_notes_shown_are_editable_with_the_tools_offered(store: Store) -> None:
    plans = [SendPlan(f"q{i}", (Step(text="an answer that takes room " * 5),))
             for i in range(10)]
    model = PlannedModel(plans)
    loop = make_loop(store, model, None, fold_strategy=AgenticFold(keep_last_sends=1),
                     context_budget_tokens=300)
    sid = await loop.new_session()
    for plan in plans:
        await loop.send(plan.text, session_id=sid)
    assert await store.list_notes(sid), "the agentic fold should have written a note"
    request = model.requests[-1]
    assert not is_fold_request(request)
    offered = {t.name for t in request.tools}
    context = context_of(request)
    assert context is None or "note_add" not in context or "note_add" in offered
