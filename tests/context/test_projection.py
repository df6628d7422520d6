"""``ProjectedRepresentation``: what a projection holds, its bound, and its storage.

A projection is derived data: deterministic, JSON-stable, within ``max_chars``, stored
with the final write of its send, and rebuilt from the immutable log when its rows are
gone (the next request is then byte-for-byte the same).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    InvalidArgumentError,
    LLMRequest,
    LLMSummaryFold,
    Message,
    ProjectedRepresentation,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from power_loop.context.tokens import count_tools
from power_loop.llm.messages import decode_message
from power_loop.llm.scripted import ScriptedCall, Turn
from tests.context.planned import Call, PlannedModel, SendPlan, SessionRunner, Step
from tests.context.support import (
    COUNTER,
    TOOLS,
    ModelDown,
    delete_projections,
    echo,
    is_fold_request,
    layout,
    request_tokens,
)

ANSWER = "  The   answer\n is forty-two, as computed by the tool.  "


def a_send() -> list[Message]:
    calls = [ToolCallPart("c1", "search", '{"q": "x"}'), ToolCallPart("c2", "add", "{}")]
    return [
        Message.user("  What is\n\tsix times seven?  "),
        Message.assistant("Let me check.", calls),
        Message.tool_result(ToolResultPart("c1", "search", "found")),
        Message.tool_result(ToolResultPart("c2", "add", "42")),
        Message.user("[power_loop] continue", synthetic="continue"),
        Message.assistant("", [ToolCallPart("c3", "search", "{}")]),
        Message.tool_result(ToolResultPart("c3", "search", "again")),
        Message.assistant(ANSWER),
    ]


def test_projection_holds_question_answer_and_tools() -> None:
    projection = ProjectedRepresentation(max_chars=300).project(3, a_send())
    assert projection == {"asked": "What is six times seven?",
                          "answered": "The answer is forty-two, as computed by the tool.",
                          "tools": ["search", "add"]}


def test_projection_renders_two_messages() -> None:
    rep = ProjectedRepresentation(max_chars=300)
    rendered = rep.render(3, None, rep.project(3, a_send()))
    assert [m.role for m in rendered] == ["user", "assistant"]
    assert rendered[0].text == "What is six times seven?"
    assert rendered[1].text == ("The answer is forty-two, as computed by the tool. "
                                "[tools: search, add]")
    assert rendered == rep.render(3, a_send(), None)


def test_projection_of_a_send_without_answer_or_question() -> None:
    rep = ProjectedRepresentation(max_chars=40)
    rendered = rep.render(0, [Message.user("   ")], None)
    assert [m.text for m in rendered] == ["(no question)", "(no answer)"]


def test_max_chars_is_validated() -> None:
    with pytest.raises(InvalidArgumentError):
        ProjectedRepresentation(max_chars=39)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=600)
_TOOL = st.sampled_from(["echo", "lookup", "search", "add"])


@given(question=_TEXT, answers=st.lists(_TEXT, max_size=3),
       tools=st.lists(_TOOL, max_size=2), max_chars=st.integers(80, 500))
def test_projection_is_bounded_deterministic_and_json_stable(
        question: str, answers: list[str], tools: list[str], max_chars: int) -> None:
    messages = [Message.user(question)]
    for i, name in enumerate(tools):
        messages += [Message.assistant("", [ToolCallPart(f"c{i}", name, "{}")]),
                     Message.tool_result(ToolResultPart(f"c{i}", name, "ok"))]
    messages += [Message.assistant(a) for a in answers]
    rep = ProjectedRepresentation(max_chars=max_chars)
    projection = rep.project(7, messages)
    assert projection == rep.project(7, messages)
    assert json.loads(json.dumps(projection)) == projection
    assert projection["tools"] == list(dict.fromkeys(tools))
    asked, answered = rep.render(7, None, projection)
    assert len(projection["asked"]) <= max_chars // 3
    if question.strip() and any(a.strip() for a in answers):
        assert len(asked.text) + len(answered.text) <= max_chars


def test_projection_bound_holds_with_many_tools() -> None:
    names = [f"tool_with_a_rather_long_name_{i}" for i in range(12)]
    messages = [Message.user("Which tools?")]
    for i, name in enumerate(names):
        messages += [Message.assistant("", [ToolCallPart(f"c{i}", name, "{}")]),
                     Message.tool_result(ToolResultPart(f"c{i}", name, "ok"))]
    messages.append(Message.assistant("All of them."))
    rep = ProjectedRepresentation(max_chars=120)
    asked, answered = rep.render(0, messages, None)
    assert len(asked.text) + len(answered.text) <= 120


# -- storage --------------------------------------------------------------------------


def projected_loop(store: Store, model: PlannedModel) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=model.llm, store=store, tools=list(TOOLS), config=AgentLoopConfig(
        representation=ProjectedRepresentation(max_chars=80), fold_strategy=LLMSummaryFold(),
        context_budget_tokens=100_000))


def plans(prefix: str, count: int) -> list[SendPlan]:
    return [SendPlan(f"{prefix} {i}", (Step(calls=(Call("echo", {"text": f"t{i}"}),)),
                                        Step(text=f"answer number {i} " * 3)))
            for i in range(count)]


async def test_projections_are_stored_when_a_send_ends(store: Store) -> None:
    model = PlannedModel([*plans("q", 2),
                          SendPlan("fails", (Step(text="late answer", fail=True),))])
    loop = projected_loop(store, model)
    rep = ProjectedRepresentation(max_chars=80)
    sid = await loop.new_session()
    for i in range(2):
        result = await loop.send(f"q {i}", session_id=sid)
        stored = await store.read_projections(sid, 0, 10)
        assert sorted(stored) == list(range(i + 1))
        assert stored[i] == (rep.version, rep.project(i, result.messages))
    with pytest.raises(ModelDown):
        await loop.send("fails", session_id=sid)
    assert 2 not in await store.read_projections(sid, 0, 10)
    await loop.resume(sid)
    assert 2 in await store.read_projections(sid, 0, 10)


async def test_a_cancelled_send_gets_its_projection(store: Store) -> None:
    model = PlannedModel([SendPlan("cancelled", (Step(cancel=True),))])
    sid = await projected_loop(store, model).new_session()
    runner = SessionRunner(model, sid, lambda: projected_loop(store, model), cold=False)
    assert await runner.play(model.plans["cancelled"]) == "cancelled"
    projections = await store.read_projections(sid, 0, 10)
    assert projections[0][1]["asked"] == "cancelled"


async def test_an_aborted_send_gets_its_projection(store: Store) -> None:
    model = PlannedModel([SendPlan("fails", (Step(text="never", fail=True),))])
    loop = projected_loop(store, model)
    sid = await loop.new_session()
    with pytest.raises(ModelDown):
        await loop.send("fails", session_id=sid)
    assert await loop.abort_pending(sid)
    assert 0 in await store.read_projections(sid, 0, 10)


async def test_deleted_projections_are_rebuilt_identically(store: Store) -> None:
    """Two identical sessions; one loses its projection rows: the next request is equal."""
    model = PlannedModel([*plans("q", 4), SendPlan("last", (Step(text="done"),))])
    sids = []
    for _ in range(2):
        loop = projected_loop(store, model)
        sid = await loop.new_session()
        for i in range(4):
            await loop.send(f"q {i}", session_id=sid)
        sids.append(sid)
    await delete_projections(store, sids[1])
    assert await store.read_projections(sids[1], 0, 10) == {}
    store.window_cache.clear()  # as a new process: the projections are rebuilt from the log
    requests = []
    for sid in sids:
        await projected_loop(store, model).send("last", session_id=sid)
        requests.append(model.requests[-1])
    assert requests[0].canonical_bytes() == requests[1].canonical_bytes()
    assert len(layout(requests[1]).finished) == 8
    rebuilt = await store.read_projections(sids[1], 0, 10)
    assert rebuilt == await store.read_projections(sids[0], 0, 10)
    assert sorted(rebuilt) == [0, 1, 2, 3, 4]


async def test_projections_of_another_version_are_recomputed(store: Store) -> None:
    model = PlannedModel([*plans("q", 3), SendPlan("last", (Step(text="done"),))])
    rep = ProjectedRepresentation(max_chars=80)
    sids = []
    for _ in range(2):
        loop = projected_loop(store, model)
        sid = await loop.new_session()
        for i in range(3):
            await loop.send(f"q {i}", session_id=sid)
        sids.append(sid)
    stale = [(i, rep.version + 1, {"asked": "stale", "answered": "stale", "tools": []})
             for i in range(3)]
    await store._write(store._put_projections_txn, sids[1], stale)
    store.window_cache.clear()  # as a new process: the projections are read, then replaced
    requests = []
    for sid in sids:
        await projected_loop(store, model).send("last", session_id=sid)
        requests.append(model.requests[-1])
    assert requests[0].canonical_bytes() == requests[1].canonical_bytes()
    assert "stale" not in requests[1].canonical_bytes().decode()
    assert await store.read_projections(sids[1], 0, 10) == await store.read_projections(
        sids[0], 0, 10)


async def test_call_ids_stay_unique_across_a_fold(store: Store) -> None:
    """A model that numbers its calls per answer (call_0) reuses ids; the loop renames them.

    The projected rendering shows no tool calls, but the log keeps them: after a fold that
    keeps a send with ``call_0``, a new ``call_0`` must still be renamed, or a cold loop
    finds the id twice in the unfolded log and refuses the session.
    """
    def script(request: LLMRequest) -> Turn:
        usage = Usage(input_tokens=request_tokens(request))
        if is_fold_request(request):
            return Turn(text="summary", usage=usage)
        if request.messages[-1].role == "user" and "call" in request.messages[-1].text:
            return Turn(tool_calls=(ScriptedCall("echo", {"text": "x"}, id="call_0"),),
                        usage=usage)
        return Turn(text="ok", usage=usage)

    def make(budget: int) -> StatefulAgentLoop:
        return StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=[echo],
                                 config=AgentLoopConfig(
                                     representation=ProjectedRepresentation(max_chars=3_000),
                                     fold_strategy=AgenticFold(keep_last_sends=1),
                                     context_budget_tokens=budget))

    roomy = make(1_000_000)
    sid = await roomy.new_session()
    await roomy.send("long " * 600, session_id=sid)
    await roomy.send("please call", session_id=sid)
    budget = count_tools(COUNTER, roomy.tools.specs()) + 150
    await make(budget).send("call again", session_id=sid)
    folds = await store.list_folds(sid)
    assert [(f.first_send, f.end_send) for f in folds] == [(0, 1)]
    await make(budget).send("and now?", session_id=sid)
    ids = [c.id for r in await store.read_messages(sid) if r.send_index >= 1
           for c in decode_message(r.role, r.body).tool_calls]
    assert len(ids) == len(set(ids)) == 2
