"""Tools that wait for a person: approval, rejection, answers, and what waiting means."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from power_loop import (
    InvalidArgumentError,
    ScriptedLLM,
    SessionWaitingError,
    Store,
    ToolCallFinished,
    WaitDecidedError,
    WaitNotFoundError,
    ask_user_tool,
    call_tool,
    call_tools,
    tool,
)
from power_loop.events.types import Event
from tests.approvals.tools import RUNS, _clear_runs, balance, wire  # noqa: F401 (fixture)
from tests.loop.support import make_loop


def over_50(arguments: Mapping[str, Any]) -> bool:
    return int(arguments["amount"]) > 50


@tool(requires_approval=over_50)
def pay(amount: int) -> str:
    """Pay someone."""
    RUNS.append(f"pay {amount}")
    return f"paid {amount}"


async def test_an_approved_call_runs_once_and_the_send_goes_on(store: Store) -> None:
    llm = ScriptedLLM([call_tool("wire", {"amount": 5}), "sent it"])
    loop = make_loop(store, llm, [wire])
    sid = await loop.new_session()
    waiting = await loop.send("pay bob", sid)
    assert (waiting.status, waiting.stop_reason) == ("waiting", "awaiting_approval")
    (pending,) = waiting.waiting
    assert (pending.tool_name, pending.kind, pending.arguments) == ("wire", "approval",
                                                                    '{"amount": 5}')
    assert RUNS == []
    assert [w.wait_id for w in await loop.waiting_for(sid)] == [pending.wait_id]
    session = await store.get_session(sid)
    assert session.pending_send == 0 and session.lease_owner is None

    result = await loop.approve(sid, pending.wait_id)
    assert (result.status, result.final_text) == ("done", "sent it")
    assert RUNS == ["wire 5"]
    assert await loop.waiting_for(sid) == []
    with pytest.raises(WaitDecidedError) as again:
        await loop.approve(sid, pending.wait_id)
    assert again.value.code == "wait_already_decided"
    assert RUNS == ["wire 5"]


async def test_a_rejection_is_the_tool_result(store: Store) -> None:
    llm = ScriptedLLM([call_tool("wire", {"amount": 5}), "ok, not sending"])
    loop = make_loop(store, llm, [wire])
    sid = await loop.new_session()
    (pending,) = (await loop.send("pay bob", sid)).waiting
    result = await loop.reject(sid, pending.wait_id, reason="too much")
    assert result.final_text == "ok, not sending"
    assert RUNS == []
    last = llm.requests[-1].messages[-1].tool_results[0]
    assert last.is_error and "rejected" in last.content and "too much" in last.content


async def test_the_whole_round_waits_and_then_runs_in_order(store: Store) -> None:
    llm = ScriptedLLM([call_tools(("balance", {}), ("wire", {"amount": 1}),
                                  ("pay", {"amount": 99}), ("pay", {"amount": 2})), "done"])
    loop = make_loop(store, llm, [wire, balance, pay])
    sid = await loop.new_session()
    waiting = await loop.send("go", sid)
    assert sorted(w.tool_name for w in waiting.waiting) == ["pay", "wire"]
    assert RUNS == []  # nothing of the round ran
    first, second = waiting.waiting
    partly = await loop.approve(sid, first.wait_id)
    assert partly.status == "waiting"
    assert [w.wait_id for w in partly.waiting] == [second.wait_id]
    assert RUNS == []
    result = await loop.approve(sid, second.wait_id)
    assert result.final_text == "done"
    # Each call ran once (in parallel: their order of running is not fixed)...
    assert sorted(RUNS) == ["balance", "pay 2", "pay 99", "wire 1"]
    # ...and their results are stored, and read by the model, in call order.
    results = [r.content for m in llm.requests[-1].messages for r in m.tool_results]
    assert results == ["100", "wired 1", "paid 99", "paid 2"]


async def test_ask_user_waits_for_an_answer(store: Store) -> None:
    llm = ScriptedLLM([call_tool("ask_user", {"question": "Which city?"}), "Paris it is"])
    loop = make_loop(store, llm, [ask_user_tool()])
    sid = await loop.new_session()
    waiting = await loop.send("book a trip", sid)
    assert waiting.stop_reason == "awaiting_input"
    (question,) = waiting.waiting
    with pytest.raises(InvalidArgumentError):
        await loop.approve(sid, question.wait_id)
    result = await loop.answer(sid, question.wait_id, "Paris")
    assert result.final_text == "Paris it is"
    answer = llm.requests[-1].messages[-1].tool_results[0]
    assert (answer.content, answer.is_error) == ("Paris", False)


async def test_a_new_send_on_a_waiting_session_says_what_to_do(store: Store) -> None:
    llm = ScriptedLLM([call_tool("wire", {"amount": 5}), "aborted anyway"])
    loop = make_loop(store, llm, [wire])
    sid = await loop.new_session()
    (pending,) = (await loop.send("pay", sid)).waiting
    with pytest.raises(SessionWaitingError) as refused:
        await loop.send("hello?", sid)
    assert refused.value.code == "session_waiting"
    assert refused.value.waiting == (pending.wait_id,)
    # resume does nothing: no model call, no tool, the same waiting result
    again = await loop.resume(sid)
    assert again is not None and again.status == "waiting"
    assert [w.wait_id for w in again.waiting] == [pending.wait_id]
    assert len(llm.requests) == 1 and RUNS == []
    assert await loop.abort_pending(sid)
    with pytest.raises(WaitDecidedError) as gone:
        await loop.approve(sid, pending.wait_id)
    assert gone.value.status == "abandoned"
    assert RUNS == []


async def test_unknown_calls_and_sessions_are_typed_errors(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM([]), [wire])
    sid = await loop.new_session()
    with pytest.raises(WaitNotFoundError) as unknown:
        await loop.approve(sid, "nope")
    assert unknown.value.code == "wait_not_found"
    with pytest.raises(Exception) as no_session:
        await loop.reject("no-such-session", "nope")
    assert getattr(no_session.value, "code", None) == "session_not_found"


async def test_a_policy_decides_per_call_and_a_failing_one_refuses(store: Store) -> None:
    def broken(arguments: Mapping[str, Any]) -> bool:
        raise RuntimeError("policy bug")

    @tool(requires_approval=broken)
    def risky(x: int) -> str:
        """Risky."""
        RUNS.append("risky")
        return "ran"

    events: list[Event] = []
    llm = ScriptedLLM([call_tools(("pay", {"amount": 3}), ("risky", {"x": 1})), "fine"])
    loop = make_loop(store, llm, [pay, risky], on_event=events.append)
    sid = await loop.new_session()
    result = await loop.send("go", sid)
    assert result.status == "done"  # pay 3 is under the policy's bar: no wait
    assert RUNS == ["pay 3"]
    refused = [e for e in events if isinstance(e, ToolCallFinished) and e.name == "risky"]
    assert refused and refused[0].is_error and "policy bug" in refused[0].output
