"""Per-send limits: rounds, token budget, continued output, and a history that stays valid."""

from __future__ import annotations

from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    HistoryInvariantError,
    InvalidArgumentError,
    LLMRequest,
    Message,
    NewMessage,
    ScriptedLLM,
    StopReason,
    Store,
    ToolResultPart,
    Turn,
    Usage,
    call_tool,
    reply,
    tool,
)
from power_loop.llm.messages import encode_message
from power_loop.loop.driver import NO_FINAL_TEXT
from tests.loop.support import lease_is_free, make_loop, shape, texts

ticks: list[int] = []


@tool
def tick(n: int) -> str:
    """Count a tick."""
    ticks.append(n)
    return f"tick {n}"


@pytest.fixture(autouse=True)
def _reset_ticks() -> None:
    ticks.clear()


def always_calls(request: LLMRequest) -> Turn:
    """A model that calls a tool on every turn, with some text."""
    return call_tool("tick", {"n": len(request.messages)}, text=f"step {len(request.messages)}")


async def test_max_rounds_ends_with_a_final_text_and_no_tools(store: Store) -> None:
    llm = ScriptedLLM(always_calls)
    loop = make_loop(store, llm, [tick], max_rounds=2)
    sid = await loop.new_session()
    result = await loop.send("loop forever", session_id=sid)

    assert (result.stop_reason, result.status, result.rounds) == ("max_rounds", "done", 3)
    assert ticks == [1, 3]  # only the first two rounds ran their tools
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "none"]
    final_request = llm.requests[-1]
    assert final_request.messages[-1].role == "user"
    assert final_request.messages[-1].meta.get("synthetic") == "final_round"
    last = result.messages[-1]
    assert last.role == "assistant" and last.tool_calls == ()
    assert result.final_text == last.text == "step 6"
    assert last.meta["dropped_tool_calls"] == 1
    assert (await store.get_send(sid, 0)).stop_reason == "max_rounds"

    # The dropped call left nothing unanswered: the next send is a valid request.
    after = make_loop(store, ScriptedLLM(["fine"]), [tick])
    assert (await after.send("next", session_id=sid)).final_text == "fine"


async def test_a_final_round_of_only_tool_calls_stores_a_notice(store: Store) -> None:
    llm = ScriptedLLM(lambda request: call_tool("tick", {"n": len(request.messages)}))
    loop = make_loop(store, llm, [tick], max_rounds=1)
    sid = await loop.new_session()
    result = await loop.send("loop forever", session_id=sid)

    assert (result.stop_reason, result.status, result.rounds) == ("max_rounds", "done", 2)
    assert [r.tool_choice for r in llm.requests] == ["auto", "none"]
    last = result.messages[-1]
    assert last.role == "assistant" and last.tool_calls == ()
    assert result.final_text == last.text == NO_FINAL_TEXT
    assert (last.meta["synthetic"], last.meta["dropped_tool_calls"]) == ("no_final_text", 1)
    stored = (await store.read_messages(sid))[-1]
    assert stored.body["parts"] == [{"kind": "text", "text": NO_FINAL_TEXT}]
    assert stored.body["meta"]["synthetic"] == "no_final_text"
    # A valid history: the next send goes out with the notice as the previous answer.
    after = ScriptedLLM(["fine"])
    assert (await make_loop(store, after, [tick]).send("next", session_id=sid)).final_text == (
        "fine")
    assert texts(after.requests[0])[-2:] == [NO_FINAL_TEXT, "next"]


async def test_max_rounds_counts_per_send(store: Store) -> None:
    llm = ScriptedLLM([call_tool("tick", {"n": 1}), "one", call_tool("tick", {"n": 2}), "two"])
    loop = make_loop(store, llm, [tick], max_rounds=1)
    sid = await loop.new_session()
    first = await loop.send("a", session_id=sid)
    second = await loop.send("b", session_id=sid)
    assert [(r.final_text, r.stop_reason) for r in (first, second)] == [
        ("one", "max_rounds"), ("two", "max_rounds")]
    assert [r.tool_choice for r in llm.requests] == ["auto", "none", "auto", "none"]
    assert ticks == [1, 2]


async def test_token_budget_stops_before_the_next_model_call(store: Store) -> None:
    llm = ScriptedLLM([
        call_tool("tick", {"n": 1}, text="Working.", usage=Usage(40, 10)),
        call_tool("tick", {"n": 2}, usage=Usage(45, 10)),
        reply("never", usage=Usage(1, 1)),
    ])
    loop = make_loop(store, llm, [tick], max_send_tokens=100)
    sid = await loop.new_session()
    result = await loop.send("spend", session_id=sid)
    assert (result.stop_reason, result.status, result.rounds) == ("token_budget", "done", 2)
    assert result.usage == Usage(85, 20)
    assert len(llm.requests) == 2 and llm.remaining == 1
    assert ticks == [1, 2]  # the calls the model made were answered before stopping
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool"),
                                       (0, "assistant"), (0, "tool")]
    send = await store.get_send(sid, 0)
    assert (send.stop_reason, Usage.from_json(send.usage)) == ("token_budget", Usage(85, 20))

    # The budget is per send: the next one may call the model again.
    assert (await loop.send("more", session_id=sid)).final_text == "never"


async def test_token_budget_counts_cached_tokens(store: Store) -> None:
    llm = ScriptedLLM([call_tool("tick", {"n": 1}, usage=Usage(1, 1, 60, 40)), "never"])
    loop = make_loop(store, llm, [tick], max_send_tokens=100)
    sid = await loop.new_session()
    result = await loop.send("spend", session_id=sid)
    assert result.stop_reason == "token_budget" and len(llm.requests) == 1


async def test_cut_output_is_continued(store: Store) -> None:
    llm = ScriptedLLM([
        Turn(text="The answer is ", stop_reason=StopReason.MAX_TOKENS, usage=Usage(10, 5)),
        Turn(text="forty", stop_reason=StopReason.MAX_TOKENS, usage=Usage(20, 5)),
        reply("-two.", usage=Usage(30, 2)),
    ])
    loop = make_loop(store, llm, max_continuations=2)
    sid = await loop.new_session()
    result = await loop.send("What is it?", session_id=sid)
    assert result.final_text == "The answer is forty-two."
    assert (result.stop_reason, result.rounds, result.usage) == ("end_turn", 3, Usage(60, 12))
    for request in llm.requests[1:]:
        assert request.messages[-1].meta.get("synthetic") == "continue"
        assert request.messages[-2].role == "assistant"
    assert [m.role for m in result.messages] == ["user", "assistant", "user", "assistant",
                                                 "user", "assistant"]


async def test_continuations_are_bounded(store: Store) -> None:
    cut = Turn(text="more ", stop_reason=StopReason.MAX_TOKENS)
    llm = ScriptedLLM([cut, cut, cut, "unused"])
    loop = make_loop(store, llm, max_continuations=1)
    sid = await loop.new_session()
    result = await loop.send("Go on", session_id=sid)
    assert (result.final_text, result.stop_reason, result.rounds) == ("more more ",
                                                                      "max_tokens", 2)
    assert len(llm.requests) == 2

    never = ScriptedLLM([cut, "unused"])
    none = make_loop(store, never, max_continuations=0)
    sid = await none.new_session()
    result = await none.send("Go on", session_id=sid)
    assert (result.final_text, result.stop_reason, len(never.requests)) == ("more ",
                                                                           "max_tokens", 1)


async def test_next_send_after_a_cut_answer_is_not_a_continuation(store: Store) -> None:
    cut = Turn(text="half", stop_reason=StopReason.MAX_TOKENS)
    llm = ScriptedLLM([cut, "fresh"])
    loop = make_loop(store, llm, max_continuations=0)
    sid = await loop.new_session()
    await loop.send("first", session_id=sid)
    result = await loop.send("second", session_id=sid)
    assert result.final_text == "fresh"
    assert texts(llm.requests[1]) == ["first", "half", "second"]


def stray_result() -> NewMessage:
    ghost = ToolResultPart("ghost-call", "tick", "boo", False)
    return NewMessage(0, "tool", encode_message(Message.tool_result(ghost)))


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
async def test_corrupted_history_is_never_sent(store: Store, warm: bool) -> None:
    llm = ScriptedLLM(["hello", "unused"])
    loop = make_loop(store, llm, [tick])
    sid = await loop.new_session()
    await loop.send("hi", session_id=sid)
    await store.append_messages(sid, [stray_result()])  # a bug elsewhere wrote this

    sender = loop if warm else make_loop(store, llm, [tick])
    with pytest.raises(HistoryInvariantError) as raised:
        await sender.send("again", session_id=sid)
    assert "a tool result follows no tool call" in str(raised.value)
    assert len(llm.requests) == 1
    assert await lease_is_free(store, sid)


@pytest.mark.parametrize("options", [
    {"max_rounds": 0}, {"max_send_tokens": 0}, {"max_output_tokens": -1},
    {"max_continuations": -1}, {"tool_timeout": 0}, {"max_tool_output_chars": 0},
    {"max_tool_output_chars": 199},
    {"max_parallel_tools": 0}, {"lease_ttl": 0}, {"lease_wait": -1},
    {"cache_sessions": -1}, {"on_pending": "ignore"},
])
def test_config_rejects_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        AgentLoopConfig(**options)


def test_config_accepts_the_edges() -> None:
    config = AgentLoopConfig(max_continuations=0, lease_wait=0, cache_sessions=0,
                             tool_timeout=None, max_tool_output_chars=200)
    assert (config.max_continuations, config.lease_wait, config.cache_sessions) == (0, 0, 0)
    assert config.max_tool_output_chars == 200
    assert AgentLoopConfig(lease_wait=None).lease_wait is None
