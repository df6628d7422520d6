"""Hostile MCP servers, generated with hypothesis: tool listings of odd names, schemas
and annotations; results of odd shapes, sizes and encodings; arguments the schema
refuses. Nothing of it may raise anything but the errors a model reads."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    ToolAnnotations,
)
from mcp_types import (
    Tool as McpTool,
)

from power_loop import ToolContext, ToolError, ToolRegistry
from power_loop.llm.messages import ToolCallPart
from power_loop.mcp import MCPServer, MCPToolPolicy
from power_loop.mcp.content import tool_output
from power_loop.mcp.tools import build_tools, model_name
from power_loop.tools.registry import ToolLimits
from tests.mcp.support import stdio_server

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
SERVER = MCPServer.stdio("x", "unused", overrides={"off": MCPToolPolicy(enabled=False)})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=12)
keywords = st.sampled_from(["type", "properties", "required", "items", "prefixItems",
                            "$ref", "$defs", "anyOf", "minimum", "pattern", "enum",
                            "additionalProperties", "$schema", "dependentRequired"])
schemas = st.one_of(
    json_values,
    st.dictionaries(keywords, json_values, max_size=5),
    st.just({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}),
    st.just({"type": "object", "$ref": "#"}),
    st.just({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
    st.just({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}),
    st.builds(lambda n: {"type": "object", "description": "x" * n},
              st.sampled_from([0, 99_900, 100_001])))
names = st.one_of(st.sampled_from(["echo", "off", "a.b", "a_b", "ünïcode", "", "x" * 80]),
                  st.text(max_size=70))
hints = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3))
hint_sets = st.one_of(st.none(), st.builds(
    lambda r, d, i: ToolAnnotations.model_construct(read_only_hint=r, destructive_hint=d,
                                                    idempotent_hint=i), hints, hints, hints))
listed_tools = st.builds(
    lambda n, d, s, a: McpTool.model_construct(name=n, description=d, input_schema=s,
                                               annotations=a),
    names, st.one_of(st.none(), st.text(max_size=50), st.integers()), schemas, hint_sets)


async def never_called(name: str, arguments: dict[str, Any], safe: bool) -> str:
    raise AssertionError("not called")


@settings(max_examples=100, deadline=None)
@given(st.lists(listed_tools, max_size=8), st.randoms(use_true_random=False),
       st.lists(json_values, max_size=3))
def test_any_listing_builds_valid_stable_tools(listing: list[Any], shuffle: random.Random,
                                               arguments: list[Any]) -> None:
    tools, refused = build_tools(SERVER, listing, never_called)
    built = [t.name for t in tools]
    assert all(NAME.match(n) for n in built)
    assert len(set(built)) == len(built)
    for item in tools:
        json.dumps(item.parameters)  # plain JSON
        assert item.parameters["type"] == "object"
        for value in arguments:
            try:
                item.validate(value)
            except fastjsonschema.JsonSchemaValueException:
                pass
    shuffled = list(listing)
    shuffle.shuffle(shuffled)
    again, _ = build_tools(SERVER, shuffled, never_called)
    assert [t.spec for t in again] == [t.spec for t in tools]
    for listed in {getattr(t, "name", None) for t in listing}:
        if isinstance(listed, str) and listed and listed != "off":
            assert model_name("x", listed) in built or listed in refused
    assert "x__off" not in built


blocks = st.one_of(
    st.builds(lambda t: TextContent.model_construct(type="text", text=t), st.text()),
    st.builds(lambda d, m: ImageContent.model_construct(type="image", data=d, mime_type=m),
              st.one_of(st.text(max_size=50), st.integers(), st.none()),
              st.one_of(st.text(max_size=20), st.none())),
    st.builds(lambda r: EmbeddedResource.model_construct(type="resource", resource=r),
              st.one_of(st.none(), st.integers(), st.text(max_size=5))),
    st.builds(lambda k: TextContent.model_construct(type=k), st.text(max_size=60)),
    st.integers(), st.none(), st.text(max_size=5))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(blocks, max_size=6), st.none(), st.text(max_size=5)),
       st.one_of(st.none(), json_values, st.builds(set, st.lists(st.integers(), max_size=3))),
       st.one_of(st.booleans(), st.none(), st.integers()))
def test_any_result_becomes_text_or_a_tool_error(content: Any, structured: Any,
                                                is_error: Any) -> None:
    result = CallToolResult.model_construct(content=content, structured_content=structured,
                                            is_error=is_error)
    try:
        text = tool_output(result)
    except ToolError as exc:
        assert exc.message.startswith("Error:")
        return
    assert isinstance(text, str)


# -- over the wire -------------------------------------------------------------------


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner,
                                                                      ToolRegistry]]:
    runner = asyncio.Runner()
    server = stdio_server(tmp_path_factory.mktemp("wire"), max_result_chars=1_500)
    registry = ToolRegistry([server])
    runner.run(registry.refresh())
    try:
        yield runner, registry
    finally:
        runner.run(server.aclose())
        runner.close()


def call(wire: tuple[asyncio.Runner, ToolRegistry], name: str, arguments: Any) -> Any:
    runner, registry = wire
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    context = ToolContext("s", 0, "c", name, "s:0:c")
    return runner.run(registry.execute(ToolCallPart("c", name, text), context,
                                       ToolLimits(timeout=30.0, max_output_chars=1_000)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300), st.integers(-5, 2_000), st.sampled_from(["text", "image",
                                                                       "resource", "odd"]))
def test_odd_texts_and_sizes_over_a_real_connection(
        wire: tuple[asyncio.Runner, ToolRegistry], text: str, size: int, kind: str) -> None:
    echoed = call(wire, "t__echo", {"text": text})
    assert (echoed.content, echoed.is_error) == (text, False)
    shaped = call(wire, "t__shapes", {"kind": kind, "size": size})
    if kind == "text" and size > 1_500:
        assert shaped.is_error and "over the limit" in shaped.content
    elif kind == "image":
        assert "not shown" in shaped.content
    assert call(wire, "t__echo", {"text": "ok"}).content == "ok"  # still connected


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=40),
                st.fixed_dictionaries({"key": st.text(max_size=10), "value": st.integers()},
                                      optional={"extra": json_values}).map(json.dumps)))
def test_arguments_the_schema_refuses_never_reach_the_server(
        wire: tuple[asyncio.Runner, ToolRegistry], arguments: str) -> None:
    result = call(wire, "t__put", arguments)
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    value = parsed.get("value") if isinstance(parsed, dict) else None
    fits = (isinstance(parsed, dict) and isinstance(parsed.get("key"), str)
            and not isinstance(value, bool) and (type(value) is int or (
                isinstance(value, float) and value.is_integer())))
    assert result.is_error is not fits, result.content
    if fits:
        assert result.content == f"stored {parsed['key']}"
