"""The ``bash`` tool inside durable sends, on every backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from power_loop import ScriptedLLM, Store, ToolCallPart, bash_tool, call_tool
from tests.loop.support import crash_after_tool_calls, make_loop, trailing_results
from tests.shell.support import tagged_shell, wait_all_gone, wait_for_file, wait_running


async def test_a_send_runs_commands_and_exports_the_key(store: Store, tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path)
    llm = ScriptedLLM([
        call_tool("bash", {"command": 'echo "$POWER_LOOP_IDEMPOTENCY_KEY" > key; cat key'}),
        call_tool("bash", {"command": "exit 7"}),
        "Both ran."])
    loop = make_loop(store, llm, [bash_tool(shell)])
    sid = await loop.new_session()
    result = await loop.send("Run things", session_id=sid)

    assert (result.final_text, result.status) == ("Both ran.", "done")
    first = result.messages[1].tool_calls[0].id
    key = f"{sid}:0:{first}"
    assert (tmp_path / "key").read_text() == key + "\n"
    [echoed] = trailing_results(llm.requests[1])
    assert echoed.content == f"exit code: 0\n<stdout>\n{key}\n</stdout>\nstderr: (empty)"
    [failed] = trailing_results(llm.requests[2])
    assert (failed.is_error, failed.content.splitlines()[0]) == (False, "exit code: 7")
    history = [h.message for h in await loop.history(sid)]
    assert [r.content for m in history for r in m.tool_results] == [echoed.content,
                                                                    failed.content]
    assert await wait_all_gone(tag) == []


async def test_a_lost_command_is_not_run_again_on_resume(store: Store, tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path)
    llm = ScriptedLLM(["I will check whether it ran."])
    loop = make_loop(store, llm, [bash_tool(shell)])
    sid = await loop.new_session()
    call = ToolCallPart("c-deploy", "bash", '{"command": "touch deployed"}')
    await crash_after_tool_calls(store, sid, "Deploy", [call])

    resumed = await loop.resume(sid)
    assert resumed is not None and resumed.status == "done"
    assert not (tmp_path / "deployed").exists()
    [told] = trailing_results(llm.requests[0])
    assert told.call_id == "c-deploy" and told.is_error and "unknown" in told.content


async def test_cancelling_the_send_kills_the_command(store: Store, tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path, timeout=30.0)
    llm = ScriptedLLM([call_tool("bash", {"command": "sleep 30 & echo up > ready; sleep 30"}),
                       "yes"])
    loop = make_loop(store, llm, [bash_tool(shell)])
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Start it", session_id=sid))
    await wait_for_file(tmp_path / "ready")
    await wait_running(tag, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_all_gone(tag) == []
    assert (await store.get_send(sid, 0)).status == "cancelled"
    result = await loop.send("still there?", session_id=sid)
    assert (result.final_text, result.status) == ("yes", "done")
