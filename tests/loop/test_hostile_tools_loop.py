"""No tool behaviour can wedge a send: the named cases through a real loop, on every backend.

Each send finishes normally, the stored result is the error the model reads, the next
send works without ``resume`` and nothing is left pending; the failure is logged with
its traceback. (tests/loop/test_hostile_tools.py has each case at the registry;
tests/loop/test_hostile_tools_property.py generates them.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    Event,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    ToolCallFinished,
    ToolContext,
    ToolError,
    Turn,
    call_tool,
    tool,
)
from power_loop.tools import make_tool
from power_loop.tools.registry import MAX_ERROR_CHARS
from power_loop.tools.running import _abandoned
from tests.loop.support import lease_is_free

GUARD = 30.0  # a blocked thread is released after this many seconds at the latest


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no str for you")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


class Case:
    """A hostile tool and what the model must read for it."""

    def __init__(self, fn: Callable[..., Any], error_type: str, starts: str) -> None:
        self.tool = make_tool(fn, timeout=0.1)
        self.error_type = error_type
        self.starts = starts


def _named_cases(release: asyncio.Event, blocked: threading.Event) -> list[Case]:
    def stop_iteration() -> str:
        """Sync tool raising StopIteration."""
        raise StopIteration

    async def system_exit() -> str:
        """Async tool raising SystemExit."""
        raise SystemExit(2)

    def keyboard_interrupt() -> str:
        """Sync tool raising KeyboardInterrupt."""
        raise KeyboardInterrupt

    async def async_keyboard_interrupt() -> str:
        """Async tool raising KeyboardInterrupt."""
        raise KeyboardInterrupt

    async def generator_exit() -> str:
        """Async tool raising GeneratorExit."""
        raise GeneratorExit

    def unprintable() -> str:
        """Raise an exception that cannot be printed."""
        raise Unprintable

    def digits() -> int:
        """Return an int too long to print."""
        return 10 ** 5000

    async def late() -> str:
        """Answer after the deadline."""
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()
        return "late"

    async def never() -> str:
        """Ignore every cancellation until released."""
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return "never"

    def blocking() -> str:
        """Block the thread past the deadline."""
        blocked.wait(GUARD)
        return "blocked"

    failed = "Error: tool '{}' failed: "
    overdue = "Error: tool '{}' did not finish within 0.1s"
    return [
        Case(stop_iteration, "StopIteration", failed + "StopIteration"),
        Case(system_exit, "SystemExit", failed + "SystemExit: 2"),
        Case(keyboard_interrupt, "KeyboardInterrupt", failed + "KeyboardInterrupt"),
        Case(async_keyboard_interrupt, "KeyboardInterrupt", failed + "KeyboardInterrupt"),
        Case(generator_exit, "GeneratorExit", failed + "GeneratorExit"),
        Case(unprintable, f"{__name__}.Unprintable", failed + "Unprintable"),
        Case(digits, "ValueError", "Error: tool '{}' returned a value that cannot be shown"),
        Case(late, "TimeoutError", overdue),
        Case(never, "TimeoutError", overdue),
        Case(blocking, "TimeoutError", overdue),
    ]


def script(request: LLMRequest) -> Turn:
    """Call the tool the user names; answer "done" to its result, "yes" to anything else."""
    last = request.messages[-1]
    if last.role == "tool":
        return Turn(text="done")
    if last.text.startswith("call "):
        return call_tool(last.text.removeprefix("call "))
    return Turn(text="yes")


async def test_named_cases_through_the_loop(store: Store) -> None:
    release, blocked = asyncio.Event(), threading.Event()
    cases = _named_cases(release, blocked)
    events: list[Event] = []
    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store,
                             tools=[c.tool for c in cases],
                             config=AgentLoopConfig(on_event=events.append))
    sid = await loop.new_session()
    try:
        for case in cases:
            name = case.tool.name
            events.clear()
            result = await loop.send(f"call {name}", session_id=sid)
            assert (result.status, result.final_text) == ("done", "done"), name
            [stored] = result.messages[-2].tool_results
            assert stored.is_error and stored.content.startswith(case.starts.format(name)), (
                name, stored.content)
            assert len(stored.content) <= MAX_ERROR_CHARS
            [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
            assert (finished.is_error, finished.error_type) == (True, case.error_type), name
            assert finished.traceback, name
            again = await loop.send("still there?", session_id=sid)
            assert (again.status, again.final_text) == ("done", "yes"), name
            assert (await store.get_session(sid)).pending_send is None
            assert await lease_is_free(store, sid)
    finally:
        release.set()
        blocked.set()
    history = [h.message for h in await loop.history(sid)]
    stored_errors = [r for m in history for r in m.tool_results]
    assert len(stored_errors) == len(cases) and all(r.is_error for r in stored_errors)


async def test_text_the_databases_might_refuse_is_stored_valid(store: Store) -> None:
    @tool
    def odd_text() -> str:
        """Return a lone surrogate and a NUL."""
        return "a\ud800b\x00c"

    @tool
    def odd_error() -> str:
        """Raise with a lone surrogate and a NUL."""
        raise ToolError("bad \udfff\x00 input")

    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=[odd_text, odd_error])
    sid = await loop.new_session()
    for name in ("odd_text", "odd_error"):
        assert (await loop.send(f"call {name}", session_id=sid)).status == "done"
    results = [r for h in await loop.history(sid) for r in h.message.tool_results]
    assert [(r.content, r.is_error) for r in results] == [
        ("a\ufffdb\x00c", False), ("bad \ufffd\x00 input", True)]


async def test_a_failure_is_logged_with_its_traceback(store: Store,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    @tool
    def charge(ctx: ToolContext) -> str:
        """Charge the card."""
        raise ConnectionError("payment service unreachable")

    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=[charge])
    sid = await loop.new_session()
    with caplog.at_level(logging.WARNING, logger="power_loop"):
        result = await loop.send("call charge", session_id=sid)
    [call] = result.messages[1].tool_calls
    [record] = [r for r in caplog.records if r.name.startswith("power_loop")]
    assert record.levelno == logging.WARNING and record.name == "power_loop.tools"
    message = record.getMessage()
    assert "Traceback (most recent call last)" in message and "in charge" in message
    assert "ConnectionError: payment service unreachable" in message
    assert f"session {sid}, send #0, call {call.id}" in message
    fields = ("session_id", "send_index", "call_id", "tool_name", "error_type")
    assert [getattr(record, f) for f in fields] == [sid, 0, call.id, "charge",
                                                    "ConnectionError"]


async def test_cancelling_a_send_whose_tool_ignores_cancellation(store: Store) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @tool
    async def stubborn() -> str:
        """Ignore cancellation until released."""
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return "never read"

    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=[stubborn])
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("call stubborn", session_id=sid))
    await started.wait()
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task  # the tool had its grace, then was left behind
        send = await store.get_send(sid, 0)
        assert (send.status, send.stop_reason) == ("cancelled", "cancelled")
        [result] = (await loop.history(sid))[-1].message.tool_results
        assert result.is_error and "cancelled" in result.content
        again = await loop.send("still there?", session_id=sid)
        assert (again.status, again.final_text) == ("done", "yes")
    finally:
        release.set()
    await asyncio.wait(list(_abandoned))
