"""The same agent scenarios on ScriptedLLM, the OpenAI adapter and the Anthropic adapter.

Each runs a real :class:`StatefulAgentLoop` on SQLite (and the tool round trip on every
backend), so what the loop stores and streams is checked against real SDK streams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    Event,
    SendFinished,
    SendResult,
    StatefulAgentLoop,
    Store,
    TextChunk,
    open_store,
    tool,
)
from power_loop.errors import LLMStreamInterruptedError, StructuredOutputError
from tests.providers.models import BreakOff, Calls, Model, Say

SCHEMA = {"type": "object", "properties": {"total_sum": {"type": "integer"}},
          "required": ["total_sum"], "additionalProperties": False}


@tool
def add(a: int, b: int) -> str:
    """Add two integers."""
    return f"sum={a + b}"


@tool
def mul(a: int, b: int) -> str:
    """Multiply two integers."""
    return f"product={a * b}"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "scenarios.db"))
    yield store
    await store.aclose()


def make_loop(model: Model, store: Store, **config: Any) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=model.llm, store=store, tools=[add, mul],
                             config=AgentLoopConfig(**config))


async def roles(loop: StatefulAgentLoop, sid: str) -> list[str]:
    return [item.message.role for item in await loop.history(sid)]


async def streamed(loop: StatefulAgentLoop, text: str, sid: str) -> tuple[list[Event], SendResult]:
    events = [event async for event in loop.stream(text, session_id=sid)]
    last = events[-1]
    assert isinstance(last, SendFinished)
    return events, last.result


async def test_plain_answer(model: Model, sqlite_store: Store) -> None:
    model.script(Say("Hello from the model, in pieces."))
    loop = make_loop(model, sqlite_store)
    sid = await loop.new_session(system_prompt="Be brief.")
    events, result = await streamed(loop, "Hi", sid)
    assert result.final_text == "Hello from the model, in pieces."
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == result.final_text
    assert (result.status, result.stop_reason, result.rounds) == ("done", "end_turn", 1)
    assert result.usage.output_tokens > 0
    assert await roles(loop, sid) == ["user", "assistant"]
    assert "Be brief." in model.last_request() and model.calls_made == 1


async def tool_round_trip(model: Model, store: Store) -> None:
    model.script(Calls((("add", {"a": 2, "b": 3}),), text="Let me add."), Say("2 + 3 = 5."))
    loop = make_loop(model, store)
    sid = await loop.new_session()
    result = await loop.send("What is 2 + 3?", session_id=sid)
    assert (result.final_text, result.rounds, result.stop_reason) == ("2 + 3 = 5.", 2,
                                                                      "end_turn")
    history = await loop.history(sid)
    assert [i.message.role for i in history] == ["user", "assistant", "tool", "assistant"]
    [call] = history[1].message.tool_calls
    [outcome] = history[2].message.tool_results
    assert (call.name, call.parsed_arguments()) == ("add", {"a": 2, "b": 3})
    assert (outcome.call_id, outcome.content, outcome.is_error) == (call.id, "sum=5", False)
    assert "sum=5" in model.last_request() and model.calls_made == 2


async def test_tool_round_trip(model: Model, sqlite_store: Store) -> None:
    await tool_round_trip(model, sqlite_store)


async def test_tool_round_trip_on_every_backend(model: Model, store: Store) -> None:
    await tool_round_trip(model, store)


async def test_parallel_tools(model: Model, sqlite_store: Store) -> None:
    model.script(Calls((("add", {"a": 1, "b": 2}), ("mul", {"a": 3, "b": 4}),
                        ("add", {"a": 10, "b": 20}))), Say("3, 12 and 30."))
    loop = make_loop(model, sqlite_store)
    sid = await loop.new_session()
    result = await loop.send("Three sums", session_id=sid)
    assert result.final_text == "3, 12 and 30."
    history = [i.message for i in await loop.history(sid)]
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "tool",
                                         "assistant"]
    calls = history[1].tool_calls
    results = [m.tool_results[0] for m in history[2:5]]
    assert [r.call_id for r in results] == [c.id for c in calls]
    assert [r.content for r in results] == ["sum=3", "product=12", "sum=30"]
    sent = model.last_request()
    assert all(text in sent for text in ("sum=3", "product=12", "sum=30"))


async def test_structured_output(model: Model, sqlite_store: Store) -> None:
    model.script(Say(json.dumps({"total_sum": 5})))
    loop = make_loop(model, sqlite_store)
    sid = await loop.new_session()
    result = await loop.send("2 + 3 as JSON", session_id=sid, output_schema=SCHEMA)
    assert result.output == {"total_sum": 5}
    assert "total_sum" in model.last_request()  # the schema went to the model


async def test_structured_output_that_does_not_match(model: Model, sqlite_store: Store) -> None:
    model.script(Say('{"total_sum": "five"}'))
    loop = make_loop(model, sqlite_store, output_schema=SCHEMA)
    sid = await loop.new_session()
    with pytest.raises(StructuredOutputError) as caught:
        await loop.send("2 + 3 as JSON", session_id=sid)
    assert caught.value.code == "structured_output_invalid"
    assert caught.value.result.final_text == '{"total_sum": "five"}'
    assert (await sqlite_store.get_session(sid)).pending_send is None  # the send is finished


async def test_crash_mid_stream_then_resume(model: Model, sqlite_store: Store) -> None:
    model.script(BreakOff("Partial answer that breaks"), Say("The whole answer."))
    loop = make_loop(model, sqlite_store)
    sid = await loop.new_session()
    with pytest.raises(LLMStreamInterruptedError) as caught:
        await loop.send("Tell me", session_id=sid)
    assert caught.value.code == "llm_stream_interrupted"
    assert model.calls_made == 1  # a stream that produced output is never retried
    session = await sqlite_store.get_session(sid)
    assert session.pending_send == 0
    [send] = await sqlite_store.list_sends(sid)
    assert send.error is not None and send.error["code"] == "llm_stream_interrupted"
    partial = (await loop.history(sid))[-1].message
    assert partial.role == "assistant" and partial.meta.get("partial") == "stream_error"
    assert partial.text and "Partial answer that breaks".startswith(partial.text)

    result = await loop.resume(sid)
    assert result is not None and result.status == "done"
    assert result.final_text.endswith("The whole answer.")
    assert await roles(loop, sid) == ["user", "assistant", "user", "assistant"]
    assert partial.text in model.last_request()  # the model saw what it had said
    assert model.calls_made == 2
    assert (await sqlite_store.get_session(sid)).pending_send is None
