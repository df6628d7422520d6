"""Retrying a send with its own ``request_key`` after its process stopped.

A dead process is played honestly in-process: its send is opened on the store under a
lease named after a process of this host that has exited (so the loop can tell it is
gone), with a short TTL, and that lease is never renewed nor released. A live original
is a second loop in this process whose send waits in a tool until the test lets it go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import (
    Event,
    InvalidArgumentError,
    Message,
    NewMessage,
    ScriptedLLM,
    SendFinished,
    SendPendingError,
    SendResult,
    SendStarted,
    SessionBusyError,
    Store,
    ToolCallPart,
    ToolContext,
    call_tool,
    reply,
    tool,
)
from power_loop.events import LeaseWait
from power_loop.llm.messages import encode_message
from power_loop.loop.waiting import HOLDER_GONE, HOLDER_RUNNING, HOLDER_UNKNOWN, holder_state
from tests.loop.support import lease_is_free, make_loop, shape

TTL = 0.5
"""The dead owner's lease: short, so that waiting it out is cheap."""
SEEN_TTL = 1.0
"""The dead owner's lease where a test asserts the wait on it: long enough that the
retry surely begins before it expires, even on a loaded machine."""
KEY = "order-42"
TEXT = "Look the order up and pay it"

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


@pytest.fixture(scope="module")
def dead_owner() -> str:
    """A lease owner named as a loop names it, after a process of this host that exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:deadbeef0000"


async def crash_holding_the_lease(store: Store, session_id: str, owner: str, *,
                                  text: str = TEXT, request_key: str | None = KEY,
                                  ttl: float = TTL) -> int:
    """What a process killed after storing its model's tool calls leaves behind, its lease
    not yet expired: the send pending, its calls without results. Returns the send index.
    """
    start = await store.begin_send(
        session_id, [NewMessage(0, "user", encode_message(Message.user(text)))],
        owner=owner, ttl=ttl, request_key=request_key)
    assert start.lease is not None
    answer = Message.assistant("Let me check.", CALLS, stop_reason="tool_use")
    await store.append_messages(
        session_id, [NewMessage(start.send_index, "assistant", encode_message(answer))],
        epoch=start.lease.epoch)
    return start.send_index


def waits(events: list[Event]) -> list[LeaseWait]:
    return [e for e in events if isinstance(e, LeaseWait)]


async def test_resume_retry_finishes_the_crashed_send(
        store: Store, dead_owner: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="power_loop.loop")
    events: list[Event] = []
    llm = ScriptedLLM(["Paid, once."])
    loop = make_loop(store, llm, TOOLS, on_pending="resume", on_event=events.append)
    sid = await loop.new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner, ttl=SEEN_TTL)

    result = await loop.send(TEXT, sid, request_key=KEY)
    assert (result.send_index, result.final_text, result.status) == (index, "Paid, once.",
                                                                     "done")
    assert runs == [("lookup", 2)]  # the unsafe transfer is not run again
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool"),
                                       (0, "tool"), (0, "assistant")]
    assert (await store.get_session(sid)).pending_send is None
    assert await lease_is_free(store, sid)

    # The wait on the dead owner's lease was reported, as an event and at INFO.
    [wait] = waits(events)
    assert (wait.session_id, wait.send_index, wait.holder) == (sid, index, dead_owner)
    assert wait.reason == HOLDER_GONE
    assert 0 < wait.expires_in <= SEEN_TTL
    assert wait.wait_limit is not None and wait.wait_limit > 0
    [line] = [r for r in caplog.records if r.name == "power_loop.loop"]
    assert line.levelno == logging.INFO
    assert dead_owner in line.getMessage() and "gone" in line.getMessage()
    assert f"waiting {min(wait.expires_in, wait.wait_limit):.1f}s" in line.getMessage()
    started = [e for e in events if isinstance(e, SendStarted)]
    assert [(e.send_index, e.resumed) for e in started] == [(index, True)]
    assert isinstance(events[-1], SendFinished) and events[-1].result == result

    # Retried again: the same result, nothing written, no model call.
    assert await loop.send(TEXT, sid, request_key=KEY) == result
    assert llm.remaining == 0 and len(llm.requests) == 1
    assert runs == [("lookup", 2)]


async def test_resume_retry_after_the_dead_lease_expired(store: Store,
                                                        dead_owner: str) -> None:
    llm = ScriptedLLM(["Paid late."])
    loop = make_loop(store, llm, TOOLS, on_pending="resume")
    sid = await loop.new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner, ttl=0.001)
    left = await store.get_session(sid)
    assert left.lease_expires_at is not None
    # Until the dead lease has lapsed (the engines share this host's clock).
    lapse = left.lease_expires_at + timedelta(milliseconds=50) - datetime.now(UTC)
    await asyncio.sleep(max(0.0, lapse.total_seconds()))

    result = await loop.send(TEXT, sid, request_key=KEY)
    assert (result.send_index, result.final_text, result.status) == (index, "Paid late.",
                                                                     "done")
    assert runs == [("lookup", 2)]
    assert await loop.send(TEXT, sid, request_key=KEY) == result
    assert len(llm.requests) == 1


async def test_raise_retry_says_how_to_finish_the_send(store: Store, dead_owner: str) -> None:
    llm = ScriptedLLM(["unused"])
    loop = make_loop(store, llm, TOOLS)  # on_pending="raise", the default
    sid = await loop.new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner)
    before = await shape(store, sid)

    with pytest.raises(SendPendingError) as raised:
        await loop.send(TEXT, sid, request_key=KEY)
    assert (raised.value.session_id, raised.value.send_index) == (sid, index)
    message = str(raised.value)
    assert KEY in message and "resume" in message and "on_pending='resume'" in message
    assert await shape(store, sid) == before
    assert (await store.get_send(sid, index)).status == "pending"
    assert await lease_is_free(store, sid)  # the dead lease waited out, ours released
    assert llm.requests == [] and runs == []

    resumed = await loop.resume(sid)  # what the message says to do
    assert resumed is not None and resumed.final_text == "unused"
    assert await loop.send(TEXT, sid, request_key=KEY) == resumed


async def test_abort_retry_returns_the_aborted_send(store: Store, dead_owner: str) -> None:
    llm = ScriptedLLM(["A fresh answer."])
    loop = make_loop(store, llm, TOOLS, on_pending="abort")
    sid = await loop.new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner)

    result = await loop.send(TEXT, sid, request_key=KEY)
    assert (result.send_index, result.status, result.stop_reason) == (index, "aborted",
                                                                      "aborted")
    assert result.final_text == "Let me check."
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "tool"]
    assert (await store.get_session(sid)).pending_send is None
    assert await lease_is_free(store, sid)
    assert llm.requests == [] and runs == []
    assert await loop.send(TEXT, sid, request_key=KEY) == result  # the key stays that send

    fresh = await loop.send(TEXT, sid, request_key="order-42-again")
    assert (fresh.send_index, fresh.final_text) == (index + 1, "A fresh answer.")


@pytest.mark.parametrize("request_key", [None, "another-key"])
async def test_resume_with_another_request_finishes_the_crashed_one_first(
        store: Store, dead_owner: str, request_key: str | None) -> None:
    events: list[Event] = []
    llm = ScriptedLLM(["Paid.", "Next answer."])
    loop = make_loop(store, llm, TOOLS, on_pending="resume", on_event=events.append)
    sid = await loop.new_session()
    await crash_holding_the_lease(store, sid, dead_owner, ttl=SEEN_TTL)

    result = await loop.send("Something else", sid, request_key=request_key)
    assert (result.send_index, result.final_text) == (1, "Next answer.")
    first = await store.get_send(sid, 0)
    assert (first.status, first.stop_reason) == ("done", "end_turn")
    assert runs == [("lookup", 2)]
    [wait] = waits(events)
    assert (wait.holder, wait.reason, wait.send_index) == (dead_owner, HOLDER_GONE, None)
    retried = await loop.send(TEXT, sid, request_key=KEY)  # the crashed send's own key
    assert (retried.send_index, retried.final_text) == (0, "Paid.")


async def test_a_key_reused_with_other_text_is_refused_at_once(store: Store,
                                                               dead_owner: str) -> None:
    events: list[Event] = []
    loop = make_loop(store, ScriptedLLM([]), TOOLS, on_pending="resume",
                     on_event=events.append)
    sid = await loop.new_session()
    await crash_holding_the_lease(store, sid, dead_owner, ttl=60)
    held = await store.get_session(sid)
    with pytest.raises(InvalidArgumentError, match="different text"):
        await loop.send("Pay a different order", sid, request_key=KEY)
    assert events == []  # refused before any wait
    after = await store.get_session(sid)
    assert (after.lease_owner, after.lease_epoch) == (dead_owner, held.lease_epoch)


async def test_stream_retry_resumes_and_ends_with_the_result(store: Store,
                                                             dead_owner: str) -> None:
    loop = make_loop(store, ScriptedLLM(["Paid, streamed."]), TOOLS, on_pending="resume")
    sid = await loop.new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner, ttl=SEEN_TTL)

    events = [e async for e in loop.stream(TEXT, sid, request_key=KEY)]
    assert isinstance(events[0], LeaseWait) and events[0].reason == HOLDER_GONE
    assert isinstance(events[1], SendStarted) and events[1].resumed
    last = events[-1]
    assert isinstance(last, SendFinished)
    assert (last.result.send_index, last.result.final_text) == (index, "Paid, streamed.")
    again = [e async for e in loop.stream(TEXT, sid, request_key=KEY)]
    assert [type(e) for e in again] == [SendFinished]
    assert isinstance(again[0], SendFinished) and again[0].result == last.result


@pytest.mark.parametrize("policy", ["raise", "resume", "abort"])
async def test_retry_while_the_original_runs_waits_for_its_result(
        store: Store, open_more: Callable[..., Awaitable[Store]], policy: str) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    @tool
    async def slow_payment(amount: int) -> str:
        """Pay, slowly (not safe to repeat)."""
        runs.append(("slow_payment", amount))
        entered.set()
        await gate.wait()
        return "paid"

    original_llm = ScriptedLLM([call_tool("slow_payment", {"amount": 9}), reply("Paid 9.")])
    original = make_loop(store, original_llm, [slow_payment], lease_ttl=TTL)
    sid = await original.new_session()
    first = asyncio.create_task(original.send(TEXT, sid, request_key=KEY))
    await entered.wait()

    events: list[Event] = []
    seen_wait = asyncio.Event()

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, LeaseWait):
            seen_wait.set()

    retry_llm = ScriptedLLM([])
    retrier = make_loop(await open_more(), retry_llm, [slow_payment], on_pending=policy,
                        on_event=on_event)
    second = asyncio.create_task(retrier.send(TEXT, sid, request_key=KEY))
    try:
        watcher = asyncio.create_task(seen_wait.wait())
        await asyncio.wait([watcher, second], return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        [wait] = waits(events)  # the retrier waits: it neither returned nor resumed
        assert (wait.reason, wait.send_index) == (HOLDER_RUNNING, 0)
        assert wait.holder == (await store.get_session(sid)).lease_owner
        assert not second.done()
    finally:
        gate.set()

    results: list[SendResult] = list(await asyncio.gather(first, second))
    assert results[0] == results[1]
    assert (results[0].final_text, results[0].status) == ("Paid 9.", "done")
    assert runs == [("slow_payment", 9)]
    assert retry_llm.requests == [] and original_llm.remaining == 0
    assert len(await store.list_sends(sid)) == 1


async def test_two_retries_at_once_finish_the_send_once(
        store: Store, open_more: Callable[..., Awaitable[Store]], dead_owner: str) -> None:
    llms = [ScriptedLLM(["Paid, once."]), ScriptedLLM(["Paid, once."])]
    loops = [make_loop(s, llm, TOOLS, on_pending="resume")
             for s, llm in zip([store, await open_more()], llms, strict=True)]
    sid = await loops[0].new_session()
    index = await crash_holding_the_lease(store, sid, dead_owner)

    first, second = await asyncio.gather(*(loop.send(TEXT, sid, request_key=KEY)
                                           for loop in loops))
    assert first == second
    assert (first.send_index, first.final_text, first.status) == (index, "Paid, once.", "done")
    assert sum(len(llm.requests) for llm in llms) == 1
    assert runs == [("lookup", 2)]
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool"),
                                       (0, "tool"), (0, "assistant")]


async def test_waits_on_other_holders_are_reported(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="power_loop.loop")
    events: list[Event] = []
    loop = make_loop(store, ScriptedLLM(["Hello."]), on_event=events.append)
    sid = await loop.new_session()
    elsewhere = "another-host:4242:abcdef"
    await store.acquire_lease(sid, elsewhere, ttl=SEEN_TTL)

    assert (await loop.send("Hi", sid)).final_text == "Hello."
    [wait] = waits(events)
    assert (wait.holder, wait.reason, wait.send_index) == (elsewhere, HOLDER_UNKNOWN, None)
    [line] = [r for r in caplog.records if r.name == "power_loop.loop"]
    assert line.levelno == logging.INFO and elsewhere in line.getMessage()
    assert "another host" in line.getMessage()


async def test_no_wait_no_report(store: Store, dead_owner: str) -> None:
    events: list[Event] = []
    loop = make_loop(store, ScriptedLLM([]), TOOLS, on_pending="resume", lease_wait=0,
                     on_event=events.append)
    sid = await loop.new_session()
    await crash_holding_the_lease(store, sid, dead_owner, ttl=60)
    with pytest.raises(SessionBusyError, match="held by"):
        await loop.send(TEXT, sid, request_key=KEY)
    assert events == []


@settings(max_examples=100, deadline=None)
@given(owner=st.one_of(
    st.text(),
    st.builds(":".join, st.lists(st.one_of(st.just(socket.gethostname()), st.text(),
                                           st.integers(-5, 2**70).map(str)), max_size=5))))
def test_any_owner_is_classified_without_error(owner: str) -> None:
    state = holder_state(owner)
    assert state in (HOLDER_RUNNING, HOLDER_GONE, HOLDER_UNKNOWN)
    if socket.gethostname() not in owner.split(":"):
        assert state == HOLDER_UNKNOWN


def test_holder_state(dead_owner: str) -> None:
    host, pid = socket.gethostname(), os.getpid()
    assert holder_state(f"{host}:{pid}:abc") == HOLDER_RUNNING
    assert holder_state(f"worker:{host}:{pid}:abc:def") == HOLDER_RUNNING
    assert holder_state(dead_owner) == HOLDER_GONE
    assert holder_state(f"{host}:0:abc") == HOLDER_UNKNOWN
    for other in ("crashed-process", "another-host:1:abc", "", f"{host}:x:1",
                  f"{host}:{2**64}:abc", f"{host}:-3:abc", f"{host}:\u0661\u0662:abc"):
        assert holder_state(other) == HOLDER_UNKNOWN
