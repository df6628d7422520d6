"""Sync tools run on power_loop's own threads: abandoned ones cannot starve the event loop's
default executor, nor keep the process from exiting, and their number is bounded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from power_loop import AgentLoopConfig, ScriptedLLM, StatefulAgentLoop, Store, ToolCallFinished
from power_loop.tools import make_tool, threads
from tests.loop.test_hostile_tools_loop import script

GUARD = 30.0  # a hang fails the test in this many seconds; a blocked thread is released then
OVERDUE = 0.2  # the deadline of the blocking tools
# What asyncio.to_thread's default executor holds (ThreadPoolExecutor's default size).
DEFAULT_EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


class Blocker:
    """A sync tool body that blocks its thread until released, counting who got in."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0
        self.lock = threading.Lock()

    def block(self) -> str:
        with self.lock:
            self.entered += 1
        self.release.wait(GUARD)
        return "released"


async def until(condition: Callable[[], bool]) -> None:
    """Wait (on the event loop, up to GUARD) until ``condition()`` holds."""
    async with asyncio.timeout(GUARD):
        while not condition():  # noqa: ASYNC110 - kept by other threads: nothing to await
            await asyncio.sleep(0.01)


async def no_abandoned_threads() -> None:
    await until(lambda: threads.abandoned_running() == 0)


async def test_abandoned_sync_tools_do_not_starve_the_default_executor(store: Store) -> None:
    blocker = Blocker()

    def quick() -> str:
        return "quick"

    tools = [make_tool(blocker.block, name="block", timeout=OVERDUE), make_tool(quick)]
    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=tools)
    sid = await loop.new_session()
    held = DEFAULT_EXECUTOR_THREADS + 2
    try:
        for _ in range(held):
            result = await loop.send("call block", session_id=sid)
            [abandoned] = result.messages[-2].tool_results
            assert abandoned.is_error and "was abandoned" in abandoned.content
        assert blocker.entered == held  # every one holds a thread, blocked
        async with asyncio.timeout(GUARD):
            result = await loop.send("call quick", session_id=sid)
            assert await asyncio.to_thread(lambda: "the application's") == "the application's"
            assert await asyncio.get_running_loop().getaddrinfo("127.0.0.1", 80)
        [answer] = result.messages[-2].tool_results
        assert (answer.is_error, answer.content) == (False, "quick")
        again = await loop.send("still there?", session_id=sid)
        assert (again.status, again.final_text) == ("done", "yes")
    finally:
        blocker.release.set()
    await no_abandoned_threads()


async def test_past_the_bound_a_sync_call_is_refused(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    await no_abandoned_threads()
    monkeypatch.setattr(threads, "MAX_ABANDONED", 2)
    blocker = Blocker()
    events: list[object] = []

    def quick() -> str:
        return "quick"

    tools = [make_tool(blocker.block, name="block", timeout=OVERDUE), make_tool(quick)]
    loop = StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=tools,
                             config=AgentLoopConfig(on_event=events.append))
    sid = await loop.new_session()
    try:
        for _ in range(2):
            await loop.send("call block", session_id=sid)
        assert threads.abandoned_running() == 2
        events.clear()
        refused = await loop.send("call quick", session_id=sid)
        assert (refused.status, refused.final_text) == ("done", "done")
        [result] = refused.messages[-2].tool_results
        assert result.is_error and result.content == (
            "Error: tool 'quick' was not run: 2 earlier sync tool calls were abandoned at "
            "their deadlines and are still running in their threads, the most power_loop "
            "allows. Try again later.")
        [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
        assert finished.error_type == "power_loop.tools.threads.AbandonedThreadsFull"
    finally:
        blocker.release.set()
    await no_abandoned_threads()
    ran = await loop.send("call quick", session_id=sid)
    [result] = ran.messages[-2].tool_results
    assert (result.is_error, result.content) == (False, "quick")
    assert blocker.entered == 2


CHILD = """
import asyncio, sys, threading
from power_loop import AgentLoopConfig, ScriptedLLM, StatefulAgentLoop, call_tool, tool

@tool(timeout=0.2)
def forever() -> str:
    \"\"\"Block this thread for good.\"\"\"
    threading.Event().wait()
    return "never"

async def main() -> None:
    llm = ScriptedLLM([call_tool("forever"), "done"])
    async with StatefulAgentLoop(llm=llm, dsn=sys.argv[1], tools=[forever]) as loop:
        result = await loop.send("go", session_id=await loop.new_session())
    print(result.status, result.messages[-2].tool_results[0].content, flush=True)

asyncio.run(main())
print("asyncio.run returned", flush=True)
"""


def test_a_sync_tool_blocked_forever_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    proc = subprocess.run([sys.executable, str(child), str(tmp_path / "app.db")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "done Error: tool 'forever' did not finish within 0.2s and was abandoned.",
        "asyncio.run returned"], proc.stderr
