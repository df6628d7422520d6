"""``send`` and ``stream``: answers, tool rounds, events, sessions, idempotent retries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from power_loop import (
    Event,
    InvalidArgumentError,
    RoundFinished,
    RoundStarted,
    ScriptedLLM,
    SendFinished,
    SendPendingError,
    SendStarted,
    SessionNotFoundError,
    Store,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
    ToolResultPart,
    Usage,
    UsageUpdated,
    call_tool,
    fail,
    reply,
    tool,
)
from tests.loop.support import ModelDown, make_loop, shape, stored_state, texts


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


async def test_plain_answer(store: Store) -> None:
    llm = ScriptedLLM(["Hello!"])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    result = await loop.send("Hi", session_id=sid)
    assert (result.session_id, result.send_index, result.final_text) == (sid, 0, "Hello!")
    assert (result.rounds, result.stop_reason, result.status) == (1, "end_turn", "done")
    assert [(m.role, m.text) for m in result.messages] == [("user", "Hi"),
                                                          ("assistant", "Hello!")]
    assert await shape(store, sid) == [(0, "user"), (0, "assistant")]
    assert texts(llm.requests[0]) == ["Hi"]
    send = await store.get_send(sid, 0)
    assert (send.status, send.stop_reason, send.rounds) == ("done", "end_turn", 1)
    assert (await store.get_session(sid)).pending_send is None


async def test_tool_round_trip(store: Store) -> None:
    llm = ScriptedLLM([
        call_tool("add", {"a": 2, "b": 3}, usage=Usage(10, 4, 1, 2)),
        reply("2 + 3 = 5", usage=Usage(20, 6, 3, 0)),
        reply("Bye", usage=Usage(30, 1)),
    ])
    loop = make_loop(store, llm, [add])
    sid = await loop.new_session()
    result = await loop.send("What is 2 + 3?", session_id=sid)

    assert result.final_text == "2 + 3 = 5"
    assert (result.rounds, result.stop_reason, result.send_index) == (2, "end_turn", 0)
    assert result.usage == Usage(30, 10, 4, 2)
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    call = result.messages[1].tool_calls[0]
    assert (call.name, call.parsed_arguments()) == ("add", {"a": 2, "b": 3})
    assert result.messages[2].tool_results == (ToolResultPart(call.id, "add", "5", False),)
    # The model's second request carries the result right after the call.
    assert llm.requests[1].messages[-2:] == result.messages[1:3]
    assert [t.name for t in llm.requests[0].tools] == ["add"]

    second = await loop.send("Thanks", session_id=sid)
    assert (second.send_index, second.final_text, second.usage) == (1, "Bye", Usage(30, 1))
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool"),
                                       (0, "assistant"), (1, "user"), (1, "assistant")]
    history = await loop.history(sid)
    assert [h.seq for h in history] == list(range(6))
    assert tuple(h.message for h in history[:4]) == result.messages
    send = await store.get_send(sid, 0)
    assert Usage.from_json(send.usage) == result.usage
    assert send.rounds == 2


async def test_stream_events(store: Store) -> None:
    llm = ScriptedLLM([call_tool("add", {"a": 1, "b": 1}, text="Let me add."),
                       reply("The sum is two, as expected.")], chunk_size=4)
    loop = make_loop(store, llm, [add])
    sid = await loop.new_session()
    events: list[Event] = [e async for e in loop.stream("1 + 1?", session_id=sid)]

    assert isinstance(events[0], SendStarted)
    assert (events[0].source, events[0].resumed) == ("user", False)
    assert isinstance(events[-1], SendFinished)
    assert all(isinstance(e, SendStarted) == (i == 0) for i, e in enumerate(events))
    assert all((e.session_id, e.send_index) == (sid, 0) for e in events)
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    kinds = [e.type for e in events if not isinstance(e, TextChunk)]
    assert kinds == ["SendStarted", "RoundStarted", "UsageUpdated", "RoundFinished",
                     "ToolCallStarted", "ToolCallFinished", "RoundStarted", "UsageUpdated",
                     "RoundFinished", "SendFinished"]

    chunks = [e.text for e in events if isinstance(e, TextChunk)]
    assert "".join(chunks) == "Let me add.The sum is two, as expected."
    assert all(len(c) <= 4 for c in chunks)
    rounds = [e for e in events if isinstance(e, (RoundStarted, RoundFinished))]
    assert [(e.type, e.round) for e in rounds] == [
        ("RoundStarted", 1), ("RoundFinished", 1), ("RoundStarted", 2), ("RoundFinished", 2)]
    assert [(e.stop_reason, e.tool_calls) for e in rounds if isinstance(e, RoundFinished)] == [
        ("tool_use", 1), ("end_turn", 0)]
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert (started.name, started.arguments, started.attempt) == ("add", '{"a": 1, "b": 1}', 1)
    assert (finished.call_id, finished.output, finished.is_error) == (started.call_id, "2", False)
    usages = [e for e in events if isinstance(e, UsageUpdated)]
    assert usages[1].total == usages[0].usage + usages[1].usage

    result = events[-1].result
    assert result.final_text == "The sum is two, as expected."
    assert result.usage == usages[-1].total
    assert result.messages == tuple(h.message for h in await loop.history(sid))


async def test_stream_and_send_store_the_same(store: Store) -> None:
    def script() -> ScriptedLLM:
        return ScriptedLLM([call_tool("add", {"a": 4, "b": 5}), reply("nine"), reply("ok")],
                           chunk_size=3)

    sent, streamed = make_loop(store, script(), [add]), make_loop(store, script(), [add])
    a = await sent.new_session(system_prompt="Be brief.")
    b = await streamed.new_session(system_prompt="Be brief.")
    results = [await sent.send("4 + 5?", session_id=a), await sent.send("k", session_id=a)]
    for text in ("4 + 5?", "k"):
        events = [e async for e in streamed.stream(text, session_id=b)]
        assert isinstance(events[-1], SendFinished)
        assert replace(events[-1].result, session_id=a) == results.pop(0)
    assert await stored_state(store, a) == await stored_state(store, b)
    sends_a = [(s.status, s.stop_reason, s.rounds, s.usage) for s in await store.list_sends(a)]
    sends_b = [(s.status, s.stop_reason, s.rounds, s.usage) for s in await store.list_sends(b)]
    assert sends_a == sends_b


async def test_resolve_system_prompt(store: Store) -> None:
    llm = ScriptedLLM(["one", "two"])
    loop = make_loop(store, llm, system_prompt="Default prompt.")
    own = await loop.new_session(system_prompt="Own prompt.")
    default = await loop.new_session()
    assert await loop.resolve_system_prompt(own) == "Own prompt."
    assert await loop.resolve_system_prompt(default) == "Default prompt."
    await loop.send("hi", session_id=own)
    await loop.send("hi", session_id=default)
    assert [r.system for r in llm.requests] == ["Own prompt.", "Default prompt."]
    assert await make_loop(store, llm).resolve_system_prompt(default) is None


async def test_prewarm(store: Store) -> None:
    llm = ScriptedLLM(["first", "second"])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    await loop.send("one", session_id=sid)
    before = await stored_state(store, sid)
    fresh = make_loop(store, llm)
    await fresh.prewarm(sid)
    assert await stored_state(store, sid) == before
    await fresh.send("two", session_id=sid)
    assert texts(llm.requests[-1]) == ["one", "first", "two"]
    with pytest.raises(SessionNotFoundError):
        await fresh.prewarm("no-such-session")


async def test_new_session(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM([]))
    sid = await loop.new_session(system_prompt="S", metadata={"user": "ann", "n": [1, 2]})
    session = await store.get_session(sid)
    assert (session.system_prompt, dict(session.metadata)) == ("S", {"user": "ann", "n": [1, 2]})
    assert (session.next_seq, session.send_count, session.pending_send) == (0, 0, None)
    named = await loop.new_session(session_id="chosen-id")
    assert named == "chosen-id"
    assert (await store.get_session(named)).metadata == {}
    assert await loop.history(named) == []
    assert sid != await loop.new_session()


async def test_unknown_session(store: Store) -> None:
    llm = ScriptedLLM(["never"])
    loop = make_loop(store, llm)
    missing = "no-such-session"
    with pytest.raises(SessionNotFoundError) as raised:
        await loop.send("hi", session_id=missing)
    assert raised.value.session_id == missing
    with pytest.raises(SessionNotFoundError):
        [e async for e in loop.stream("hi", session_id=missing)]
    for call in (loop.history, loop.resolve_system_prompt, loop.resume, loop.heal_pending,
                 loop.abort_pending):
        with pytest.raises(SessionNotFoundError):
            await call(missing)
    assert llm.requests == []


async def test_request_key_is_idempotent(store: Store) -> None:
    llm = ScriptedLLM([call_tool("add", {"a": 1, "b": 2}), reply("three"), reply("other")])
    loop = make_loop(store, llm, [add])
    sid = await loop.new_session()
    first = await loop.send("1 + 2?", session_id=sid, request_key="req-1")
    state = await stored_state(store, sid)
    again = await loop.send("1 + 2?", session_id=sid, request_key="req-1")
    assert again == first
    assert again.messages == first.messages
    cold = await make_loop(store, ScriptedLLM([])).send("1 + 2?", session_id=sid,
                                                        request_key="req-1")
    assert cold == first
    assert await stored_state(store, sid) == state
    assert len(llm.requests) == 2
    assert len(await store.list_sends(sid)) == 1
    other = await loop.send("again", session_id=sid, request_key="req-2")
    assert (other.send_index, other.final_text) == (1, "other")


async def test_request_key_retry_through_stream(store: Store) -> None:
    llm = ScriptedLLM(["once"])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    first = await loop.send("hi", session_id=sid, request_key="k")
    state = await stored_state(store, sid)
    events = [e async for e in loop.stream("hi", session_id=sid, request_key="k")]
    # Nothing runs again: the one event is the end, carrying the first send's result.
    assert [type(e) for e in events] == [SendFinished]
    finished = events[0]
    assert isinstance(finished, SendFinished)
    assert finished.result == first
    assert (finished.session_id, finished.send_index) == (sid, first.send_index)
    assert len(llm.requests) == 1
    assert await stored_state(store, sid) == state


async def test_request_key_reused_for_other_text_is_rejected(store: Store) -> None:
    llm = ScriptedLLM(["once", "unused"])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    await loop.send("hi", session_id=sid, request_key="k")
    state = await stored_state(store, sid)

    with pytest.raises(InvalidArgumentError) as raised:
        await loop.send("something else", session_id=sid, request_key="k")
    assert "request_key" in str(raised.value)
    with pytest.raises(InvalidArgumentError):
        async for _ in loop.stream("something else", session_id=sid, request_key="k"):
            pass
    cold = make_loop(store, ScriptedLLM([]))
    with pytest.raises(InvalidArgumentError):
        await cold.send("something else", session_id=sid, request_key="k")

    assert len(llm.requests) == 1
    assert await stored_state(store, sid) == state


async def test_request_key_of_a_pending_send(store: Store) -> None:
    llm = ScriptedLLM([fail(ModelDown("offline")), reply("back")])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    with pytest.raises(ModelDown):
        await loop.send("hi", session_id=sid, request_key="k")
    with pytest.raises(SendPendingError):
        await loop.send("hi", session_id=sid, request_key="k")
    resumed = await loop.resume(sid)
    assert resumed is not None
    assert await loop.send("hi", session_id=sid, request_key="k") == resumed


async def test_source_is_recorded(store: Store) -> None:
    llm = ScriptedLLM(["Woke up."])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    events = [e async for e in loop.stream("Wake up", session_id=sid, source="timer")]
    assert isinstance(events[0], SendStarted) and events[0].source == "timer"
    assert (await store.get_send(sid, 0)).source == "timer"
    assert (await loop.history(sid))[0].message.meta["source"] == "timer"


async def test_bad_arguments_write_nothing(store: Store) -> None:
    llm = ScriptedLLM(["unused"])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    with pytest.raises(InvalidArgumentError):
        await loop.send(42, session_id=sid)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await loop.send("Hi", session_id=sid, source="Not A Token")
    with pytest.raises(InvalidArgumentError):
        await loop.send("Hi", session_id=sid, request_key="")
    assert await store.list_sends(sid) == []
    assert llm.requests == []
