"""Pending sends: a failed model call, resume, the on_pending policies, heal and abort."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from power_loop import (
    Event,
    LLMRequest,
    Message,
    NewMessage,
    PowerLoopError,
    ScriptedLLM,
    SendPendingError,
    SendStarted,
    Store,
    TextChunk,
    ToolCallFinished,
    ToolCallPart,
    ToolCallStarted,
    ToolContext,
    ToolResultPart,
    call_tool,
    fail,
    reply,
    tool,
)
from power_loop.llm.messages import encode_message
from power_loop.llm.service import StreamItem, TextDelta
from tests.loop.support import (
    ModelDown,
    crash_after_tool_calls,
    lease_is_free,
    make_loop,
    shape,
    trailing_results,
)

runs: list[tuple[str, int]] = []


@tool(safe_to_repeat=True)
def lookup(key: str, ctx: ToolContext) -> str:
    """Read a value (harmless to repeat)."""
    runs.append(("lookup", ctx.attempt))
    return f"value of {key}"


@tool
def transfer(amount: int) -> str:
    """Move money (not safe to repeat)."""
    runs.append(("transfer", amount))
    return "moved"


TOOLS = [lookup, transfer]
CALLS = (ToolCallPart("c-look", "lookup", '{"key": "k"}'),
         ToolCallPart("c-pay", "transfer", '{"amount": 5}'))


@pytest.fixture(autouse=True)
def _reset_runs() -> None:
    runs.clear()


async def make_pending(store: Store, *, text: str = "Partial answer") -> str:
    """A session whose first send failed while the model streamed ``Partial ``."""
    llm = ScriptedLLM([fail(ModelDown("the model is down"), after_chunks=1, text=text)],
                      chunk_size=8)
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    with pytest.raises(ModelDown):
        await loop.send("Question", session_id=sid)
    return sid


async def test_model_error_leaves_the_send_pending(store: Store) -> None:
    sid = await make_pending(store)
    send = await store.get_send(sid, 0)
    assert send.status == "pending"
    assert send.error == {"type": "ModelDown", "code": "model_down",
                          "message": "the model is down"}
    session = await store.get_session(sid)
    assert session.pending_send == 0
    assert await lease_is_free(store, sid)
    history = [h.message for h in await make_loop(store, ScriptedLLM([])).history(sid)]
    assert [(m.role, m.text) for m in history] == [("user", "Question"),
                                                   ("assistant", "Partial ")]
    assert history[1].meta["partial"] == "stream_error"

    llm = ScriptedLLM(["unused"])
    with pytest.raises(SendPendingError) as raised:
        await make_loop(store, llm).send("Another", session_id=sid)
    assert (raised.value.session_id, raised.value.send_index) == (sid, 0)
    assert llm.requests == []


async def test_resume_continues_the_partial_answer(store: Store) -> None:
    sid = await make_pending(store)
    llm = ScriptedLLM([reply("answer, finished.")])
    loop = make_loop(store, llm)
    events: list[Event] = []
    result = await loop.resume(sid, on_event=events.append)
    assert result is not None
    assert (result.send_index, result.status, result.stop_reason) == (0, "done", "end_turn")
    assert result.final_text == "Partial answer, finished."
    request = llm.requests[0]
    assert request.messages[-2].text == "Partial "
    assert request.messages[-1].meta["synthetic"] == "continue"
    assert isinstance(events[0], SendStarted) and events[0].resumed
    send = await store.get_send(sid, 0)
    assert (send.status, send.error) == ("done", None)
    assert await lease_is_free(store, sid)
    assert await loop.resume(sid) is None


async def test_resume_after_an_error_without_text(store: Store) -> None:
    sid = await make_pending(store, text="")
    llm = ScriptedLLM(["Answer."])
    result = await make_loop(store, llm).resume(sid)
    assert result is not None and result.final_text == "Answer."
    assert [m.role for m in llm.requests[0].messages] == ["user"]


async def test_resume_finishes_a_failed_answer_even_without_continuations(
        store: Store) -> None:
    # max_continuations bounds answers cut by the output limit; an answer cut by a model
    # error is always continued, or the send would end on half a sentence.
    sid = await make_pending(store)
    llm = ScriptedLLM(["answer."])
    result = await make_loop(store, llm, max_continuations=0).resume(sid)
    assert len(llm.requests) == 1
    assert llm.requests[0].messages[-2].text == "Partial "
    assert llm.requests[0].messages[-1].meta["synthetic"] == "continue"
    assert result is not None and result.final_text == "Partial answer."
    assert (result.status, result.stop_reason) == ("done", "end_turn")
    assert (await store.get_send(sid, 0)).status == "done"


async def test_error_in_a_later_round_keeps_the_tool_results(store: Store) -> None:
    llm = ScriptedLLM([call_tool("transfer", {"amount": 7}), fail(ModelDown("down"))])
    loop = make_loop(store, llm, TOOLS)
    sid = await loop.new_session()
    with pytest.raises(ModelDown):
        await loop.send("Pay", session_id=sid)
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool")]
    again = ScriptedLLM(["Paid."])
    result = await make_loop(store, again, TOOLS).resume(sid)
    assert result is not None and result.final_text == "Paid."
    assert runs == [("transfer", 7)]
    assert [r.content for r in trailing_results(again.requests[0])] == ["moved"]


@pytest.mark.parametrize("policy", ["raise", "resume", "abort"])
async def test_on_pending_policies(store: Store, policy: str) -> None:
    sid = await make_pending(store)
    llm = ScriptedLLM(["answer.", "Fresh reply."] if policy == "resume" else ["Fresh reply."])
    loop = make_loop(store, llm, on_pending=policy)
    if policy == "raise":
        with pytest.raises(SendPendingError):
            await loop.send("Next", session_id=sid)
        assert await shape(store, sid) == [(0, "user"), (0, "assistant")]
        assert llm.requests == []
        return
    result = await loop.send("Next", session_id=sid)
    assert (result.send_index, result.final_text) == (1, "Fresh reply.")
    first = await store.get_send(sid, 0)
    if policy == "resume":
        assert (first.status, first.stop_reason) == ("done", "end_turn")
        assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "user"),
                                           (0, "assistant"), (1, "user"), (1, "assistant")]
    else:
        assert (first.status, first.stop_reason) == ("aborted", "aborted")
        assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (1, "user"),
                                           (1, "assistant")]
        assert llm.requests[0].messages[1].text == "Partial "
    assert llm.remaining == 0


async def test_heal_pending(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM(["Noted: both outcomes unknown."]), TOOLS)
    sid = await loop.new_session()
    assert await loop.heal_pending(sid) == 0
    await crash_after_tool_calls(store, sid, "Look and pay", CALLS)

    assert await loop.heal_pending(sid) == 2
    history = [h.message for h in await loop.history(sid)]
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool"]
    for message, call in zip(history[2:], CALLS, strict=True):
        [result] = message.tool_results
        assert (result.call_id, result.name, result.is_error) == (call.id, call.name, True)
        assert "unknown" in result.content
        assert message.meta["synthetic"] == "healed"
    assert (await store.get_send(sid, 0)).status == "pending"
    assert (await store.get_session(sid)).pending_send == 0
    assert await lease_is_free(store, sid)
    assert await loop.heal_pending(sid) == 0

    resumed = await loop.resume(sid)
    assert resumed is not None and resumed.final_text == "Noted: both outcomes unknown."
    assert runs == []  # healed calls are answered: nothing is run again


async def test_abort_pending(store: Store) -> None:
    llm = ScriptedLLM(["Starting over."])
    loop = make_loop(store, llm, TOOLS)
    sid = await loop.new_session()
    assert await loop.abort_pending(sid) is False
    await crash_after_tool_calls(store, sid, "Look and pay", CALLS, text="Let me check.")

    assert await loop.abort_pending(sid) is True
    send = await store.get_send(sid, 0)
    assert (send.status, send.stop_reason, send.rounds) == ("aborted", "aborted", 1)
    assert (await store.get_session(sid)).pending_send is None
    assert await lease_is_free(store, sid)
    history = [h.message for h in await loop.history(sid)]
    assert [m.meta.get("synthetic") for m in history[2:]] == ["aborted", "aborted"]
    assert [m.tool_results[0].call_id for m in history[2:]] == ["c-look", "c-pay"]
    assert await loop.abort_pending(sid) is False

    result = await loop.send("Again", session_id=sid)
    assert result.final_text == "Starting over."
    assert [r.call_id for r in trailing_results(llm.requests[0])] == []
    assert [m.role for m in llm.requests[0].messages] == ["user", "assistant", "tool", "tool",
                                                          "user"]
    assert runs == []


async def test_resume_reruns_only_tools_safe_to_repeat(store: Store) -> None:
    llm = ScriptedLLM(["Done."])
    loop = make_loop(store, llm, TOOLS)
    sid = await loop.new_session()
    await crash_after_tool_calls(store, sid, "Look and pay", CALLS)
    events: list[Event] = []
    result = await loop.resume(sid, on_event=events.append)

    assert result is not None and (result.final_text, result.status) == ("Done.", "done")
    assert runs == [("lookup", 2)]
    look, pay = trailing_results(llm.requests[0])
    assert (look.content, look.is_error) == ("value of k", False)
    assert pay.is_error and "unknown" in pay.content
    history = [h.message for h in await loop.history(sid)]
    assert [m.meta.get("synthetic") for m in history[2:4]] == [None, "unknown_outcome"]
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.name, e.attempt) for e in started] == [("lookup", 2)]
    finished = {e.name: e for e in events if isinstance(e, ToolCallFinished)}
    assert finished["transfer"].synthetic == "unknown_outcome"
    assert finished["lookup"].synthetic is None


async def test_resume_runs_only_the_calls_without_results(store: Store) -> None:
    llm = ScriptedLLM(["Done."])
    loop = make_loop(store, llm, TOOLS)
    sid = await loop.new_session()
    calls = (ToolCallPart("c-pay", "transfer", '{"amount": 5}'),
             ToolCallPart("c-look", "lookup", '{"key": "k"}'))
    index = await crash_after_tool_calls(store, sid, "Pay and look", calls)
    paid = Message.tool_result(ToolResultPart("c-pay", "transfer", "moved"))
    await store.append_messages(sid, [NewMessage(index, "tool", encode_message(paid))])

    resumed = await loop.resume(sid)
    assert resumed is not None and resumed.final_text == "Done."
    assert runs == [("lookup", 2)]
    assert [r.content for r in trailing_results(llm.requests[0])] == ["moved", "value of k"]


class NoAnswerLLM:
    """A broken provider adapter: it streams text but never yields the LLMResponse."""

    model = "broken"

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        yield TextDelta("Half an")


async def test_a_stream_without_a_response_leaves_the_send_pending(store: Store) -> None:
    loop = make_loop(store, NoAnswerLLM())
    sid = await loop.new_session()
    with pytest.raises(PowerLoopError, match="without an LLMResponse"):
        await loop.send("Question", session_id=sid)
    send = await store.get_send(sid, 0)
    assert send.status == "pending" and send.error is not None
    assert send.error["type"] == "LLMResponseError"
    assert send.error["code"] == "llm_invalid_response"
    history = [h.message for h in await loop.history(sid)]
    assert [(m.role, m.text, m.meta.get("partial")) for m in history] == [
        ("user", "Question", None), ("assistant", "Half an", "stream_error")]
    assert await lease_is_free(store, sid)
    result = await make_loop(store, ScriptedLLM([" answer."])).resume(sid)
    assert result is not None and result.final_text == "Half an answer."


async def test_stream_raises_the_model_error_after_its_events(store: Store) -> None:
    llm = ScriptedLLM([fail(ModelDown("down"), after_chunks=1, text="Partial answer")],
                      chunk_size=8)
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    seen: list[str] = []
    with pytest.raises(ModelDown):
        async for event in loop.stream("Question", session_id=sid):
            seen.append(event.type if not isinstance(event, TextChunk) else event.text)
    assert seen == ["SendStarted", "RoundStarted", "Partial ", "SendFailed"]
    assert (await store.get_send(sid, 0)).status == "pending"
