"""MCP tools against a real server process: discovery, calls, content, errors, timeouts,
a server killed mid-call, a dropped HTTP session (no store involved)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from power_loop import ToolContext, ToolRegistry
from power_loop.llm.messages import ToolCallPart, ToolResultPart
from power_loop.mcp import MCPServer, MCPToolPolicy
from power_loop.tools.registry import ToolLimits
from tests.mcp.support import HttpServer, calls, http_server, stdio_server

LIMITS = ToolLimits(timeout=30.0, max_output_chars=5_000)


async def run(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> ToolResultPart:
    context = ToolContext("s", 0, "c1", name, "s:0:c1")
    return await registry.execute(ToolCallPart("c1", name, json.dumps(arguments)), context,
                                  LIMITS)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[MCPServer]:
    built = stdio_server(tmp_path, overrides={
        "put": MCPToolPolicy(safe_to_repeat=False),
        "append": MCPToolPolicy(requires_approval=True),
        "grow": MCPToolPolicy(enabled=False),
        "slow": MCPToolPolicy(timeout=0.5)}, max_result_chars=2_000)
    yield built
    await built.aclose()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    with http_server(tmp_path_factory.mktemp("http")) as running:
        yield running


async def test_tools_are_listed_prefixed_ordered_with_their_annotations(
        server: MCPServer) -> None:
    assert not server.connected  # nothing happens before the tools are needed
    listing = await server.list_tools()
    assert server.connected
    names = [t.name for t in listing.tools]
    assert names == sorted(names)
    assert "t__grow" not in names  # disabled by the override
    assert {"t__echo", "t__put", "t__wipe", "t__append"} <= set(names)
    tools = {t.name: t for t in listing.tools}
    assert tools["t__echo"].safe_to_repeat  # readOnlyHint
    assert tools["t__echo"].requires_approval is False
    assert not tools["t__put"].safe_to_repeat  # idempotentHint, overridden
    assert tools["t__wipe"].requires_approval is True  # destructiveHint
    assert not tools["t__wipe"].safe_to_repeat
    assert tools["t__append"].requires_approval is True  # no annotation, overridden
    assert not tools["t__append"].safe_to_repeat  # no annotation: unsafe
    assert tools["t__slow"].timeout == 0.5
    assert tools["t__echo"].parameters["required"] == ["text"]
    assert list(tools["t__echo"].parameters) == sorted(tools["t__echo"].parameters)
    again = await server.list_tools()  # cached: the same objects, no new listing
    assert again.tools == listing.tools


async def test_calls_content_and_errors_become_results(server: MCPServer,
                                                       tmp_path: Path) -> None:
    registry = ToolRegistry([server])
    assert await registry.refresh() == []
    echoed = await run(registry, "t__echo", {"text": "héllo ✓"})
    assert (echoed.content, echoed.is_error) == ("héllo ✓", False)
    image = await run(registry, "t__shapes", {"kind": "image"})
    assert "a picture:" in image.content and "[image (image/png" in image.content
    assert "not shown" in image.content and not image.is_error
    resource = await run(registry, "t__shapes", {"kind": "resource"})
    assert "[resource file:///notes.txt]\nthe notes" in resource.content
    assert "[binary resource file:///blob.bin (application/octet-stream" in resource.content
    big = await run(registry, "t__shapes", {"kind": "text", "size": 5_000})
    assert big.is_error and "over the limit of 2000" in big.content
    failed = await run(registry, "t__fail", {"message": "boom"})
    assert failed.is_error and "failed on the MCP server" in failed.content
    wrong = await run(registry, "t__echo", {"text": 3})
    assert wrong.is_error and "invalid arguments" in wrong.content
    assert "is not of type 'string'" in wrong.content
    assert calls(tmp_path) == ["echo héllo ✓"]  # the bad call never reached the server
    slow = await run(registry, "t__slow", {"seconds": 30})
    assert slow.is_error and "0.5" in slow.content
    after = await run(registry, "t__echo", {"text": "still here"})
    assert after.content == "still here"  # the timeout left the connection usable


async def test_a_server_killed_mid_call_is_restarted(tmp_path: Path) -> None:
    safe = stdio_server(tmp_path, "safe")
    unsafe = stdio_server(tmp_path, "unsafe",
                          overrides={"die": MCPToolPolicy(safe_to_repeat=False)})
    registry = ToolRegistry([safe, unsafe])
    try:
        await registry.refresh()
        first = (await run(registry, "safe__pid", {})).content
        died = await run(registry, "safe__die", {})
        # Read-only: called again once on a new process, which died too.
        assert died.is_error and "whether it took effect is unknown" in died.content
        assert calls(tmp_path) == ["die", "die"]
        second = (await run(registry, "safe__pid", {})).content
        assert second.isdigit() and second != first  # a new process
        died = await run(registry, "unsafe__die", {})
        assert died.is_error and "whether it took effect is unknown" in died.content
        assert calls(tmp_path) == ["die", "die", "die"]  # not repeated
        assert (await run(registry, "unsafe__echo", {"text": "back"})).content == "back"
        assert await registry.refresh() == []  # same tools after the restart
    finally:
        await safe.aclose()
        await unsafe.aclose()


async def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    from power_loop import MCPServerError

    missing = MCPServer.stdio("gone", str(tmp_path / "no-such-command"), connect_timeout=10)
    with pytest.raises(MCPServerError) as caught:
        await missing.list_tools()
    assert caught.value.server == "gone" and "cannot connect" in caught.value.message
    nobody = MCPServer.http("nobody", "http://127.0.0.1:9/mcp", connect_timeout=10)
    with pytest.raises(MCPServerError):
        await nobody.list_tools()
    await missing.aclose()
    await nobody.aclose()


async def test_http_calls_carry_headers(http: HttpServer) -> None:
    server = http.server(headers={"X-Team": "blue"})
    try:
        registry = ToolRegistry([server])
        await registry.refresh()
        assert (await run(registry, "h__echo", {"text": "over http"})).content == "over http"
        assert (await run(registry, "h__header", {"name": "X-Team"})).content == "blue"
        failed = await run(registry, "h__fail", {"message": "x"})
        assert failed.is_error
    finally:
        await server.aclose()


async def test_a_dropped_http_session_is_reinitialized(tmp_path: Path) -> None:
    running = HttpServer(tmp_path)
    running.start()
    server = running.server()
    try:
        registry = ToolRegistry([server])
        await registry.refresh()
        before = (await run(registry, "h__pid", {})).content
        running.stop()
        running.start()  # same port, a new process: the old session is unknown there
        # Unannotated, yet sent again: the server refused the stale session unread.
        assert (await run(registry, "h__append", {"text": "y"})).content == "appended"
        assert calls(tmp_path) == ["append y"]
        assert (await run(registry, "h__pid", {})).content != before
    finally:
        await server.aclose()
        running.stop()
