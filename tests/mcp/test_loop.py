"""MCP tools in agent loops on every backend: a tool list that changes is an event, a
destructive tool waits for approval."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest

from power_loop import (
    MCPServer,
    MCPServerError,
    ScriptedLLM,
    Store,
    ToolListChanged,
    call_tool,
    reply,
)
from power_loop.events import Event
from power_loop.llm.messages import ToolCallPart, ToolResultPart
from tests.mcp.support import calls, make_loop, stdio_server


async def test_a_changed_tool_list_is_an_event_and_reaches_the_request(
        store: Store, tmp_path: Path) -> None:
    server = stdio_server(tmp_path)
    try:
        llm = ScriptedLLM([call_tool("t__grow", {"name": "newt"}), reply("grown"),
                           call_tool("t__newt", {"text": "new!"}), reply("done")])
        sid = (await store.create_session()).id
        first = await make_loop(store, llm, [server]).send("grow", sid)
        assert first.final_text == "grown"
        names = [t.name for t in llm.requests[0].tools]
        assert "t__newt" not in names
        events: list[Event] = []
        async with aclosing(make_loop(store, llm, [server]).stream("again", sid)) as stream:
            async for event in stream:
                events.append(event)
        changed = [e for e in events if isinstance(e, ToolListChanged)]
        assert [(e.source, e.added, e.removed) for e in changed] == [("t", ("t__newt",), ())]
        assert changed[0].session_id == sid and changed[0].send_index == 1
        assert "t__newt" in [t.name for t in llm.requests[2].tools]
        results = [p for item in await make_loop(store, llm, [server]).history(sid)
                   for p in item.message.parts if isinstance(p, ToolResultPart)]
        assert (results[-1].name, results[-1].content) == ("t__newt", "new!")
    finally:
        await server.aclose()


async def test_a_destructive_tool_waits_for_approval(store: Store, tmp_path: Path) -> None:
    server = stdio_server(tmp_path)
    try:
        llm = ScriptedLLM([call_tool("t__wipe", {"reason": "spring"}), reply("wiped it")])
        loop = make_loop(store, llm, [server])
        sid = (await store.create_session()).id
        waiting = await loop.send("wipe it", sid)
        assert waiting.stop_reason == "awaiting_approval"
        assert calls(tmp_path) == []
        last = (await loop.history(sid))[-1].message
        call = last.parts[0]
        assert isinstance(call, ToolCallPart) and call.name == "t__wipe"
        done = await loop.approve(sid, call.id)
        assert done.final_text == "wiped it"
        assert calls(tmp_path) == ["wipe spring"]
    finally:
        await server.aclose()


async def test_an_unreachable_server_leaves_the_send_pending(store: Store,
                                                              tmp_path: Path) -> None:
    gone = MCPServer.stdio("t", str(tmp_path / "no-such-server"), connect_timeout=10)
    llm = ScriptedLLM([call_tool("t__echo", {"text": "back"}), reply("done")])
    sid = (await store.create_session()).id
    with pytest.raises(MCPServerError) as caught:
        await make_loop(store, llm, [gone]).send("echo", sid)
    assert caught.value.code == "mcp_server" and llm.requests == []
    await gone.aclose()
    server = stdio_server(tmp_path)  # the server is back
    try:
        resumed = await make_loop(store, llm, [server]).resume(sid)
        assert resumed is not None and resumed.final_text == "done"
        assert calls(tmp_path) == ["echo back"]
    finally:
        await server.aclose()
