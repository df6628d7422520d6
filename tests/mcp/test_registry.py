"""Tool sources in a ToolRegistry (no server needed: a source of fixed tools)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from power_loop import AgentSpec, InvalidArgumentError, Tool, ToolRegistry, tool
from power_loop.mcp import MCPServer
from power_loop.tools.sources import ToolListChange, ToolListing


@tool
def plain(x: int) -> int:
    """A plain tool."""
    return x


def made(name: str, description: str = "d") -> Tool:
    async def fn() -> str:
        return name

    return Tool(name=name, description=description, parameters={"type": "object"}, fn=fn)


@dataclass
class FixedSource:
    """A source whose tools the test sets."""

    source_name: str
    tools: tuple[Tool, ...] = ()
    version: int = 0
    found: ToolListChange | None = None
    asked: list[int] = field(default_factory=list)

    async def list_tools(self) -> ToolListing:
        self.asked.append(self.version)
        return ToolListing(self.tools, self.version, self.found)


async def test_sources_follow_plain_tools_and_report_changes() -> None:
    source = FixedSource("s", (made("s__a"), made("s__b")))
    registry = ToolRegistry([source, plain])
    assert [s.name for s in registry.specs()] == ["plain"]  # not listed yet
    assert await registry.refresh() == []
    assert [s.name for s in registry.specs()] == ["plain", "s__a", "s__b"]
    assert registry.get("s__a") is source.tools[0] and "s__b" in registry
    assert len(registry) == 3
    source.tools, source.version = (made("s__a", "new"), made("s__c")), 1
    assert await registry.refresh() == [("s", ToolListChange(("s__c",), ("s__b",),
                                                             ("s__a",)))]
    assert [s.name for s in registry.specs()] == ["plain", "s__a", "s__c"]
    assert await registry.refresh() == []  # the same version: nothing new


async def test_a_new_registry_reports_the_change_its_listing_found() -> None:
    found = ToolListChange(added=("s__x",))
    registry = ToolRegistry([FixedSource("s", (made("s__x"),), 3, found)])
    assert await registry.refresh() == [("s", found)]


async def test_clashing_names_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="two tool sources"):
        ToolRegistry([FixedSource("s"), FixedSource("s")])
    registry = ToolRegistry([plain, FixedSource("s", (made("plain"),))])
    with pytest.raises(InvalidArgumentError, match="rename one"):
        await registry.refresh()


def test_agents_keep_their_mcp_servers() -> None:
    server = MCPServer.stdio("files", "unused")
    spec = AgentSpec(name="reader", description="Reads files.", tools=[plain, server])
    assert list(spec.tools) == [plain, server]
    again = AgentSpec(name="r2", description="Reads.", tools=ToolRegistry([server]))
    assert list(again.tools) == [server]


def test_bad_server_options_are_clear_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="letters"):
        MCPServer.stdio("no spaces", "cmd")
    bad: dict[str, Any]
    for bad in ({"timeout": 0}, {"max_result_chars": 0}, {"overrides": {"x": True}}):
        with pytest.raises(InvalidArgumentError):
            MCPServer.stdio("ok", "cmd", **bad)
    with pytest.raises(InvalidArgumentError, match="http"):
        MCPServer.http("web", "ftp://example.com")
    secret = MCPServer.http("web", "https://example.com/mcp",
                            headers={"Authorization": "Bearer sk-secret"})
    assert "sk-secret" not in repr(secret) and "sk-secret" not in secret.describe()
