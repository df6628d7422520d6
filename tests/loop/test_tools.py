"""Declaring tools: JSON Schema from hints and docstrings, names, registration (no backend)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Optional, TypedDict

import pytest

from power_loop import (
    InvalidArgumentError,
    Tool,
    ToolCallPart,
    ToolContext,
    ToolRegistry,
    tool,
)
from power_loop.tools import ToolLimits, make_tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: float
    y: float = 0.0
    tags: list[str] = field(default_factory=list)


class Filter(TypedDict, total=False):
    column: str
    value: int


class Person(TypedDict):
    name: str
    age: int | None


def everything(text: str, count: int, ratio: float, flag: bool, tags: list[str],
               weights: dict[str, float], unit: Literal["C", "F"], color: Color,
               maybe: str | None, point: Point, where: Filter, who: Person,
               anything: Any, mixed: Literal[1, "one"],
               limit: Optional[int] = None,  # noqa: UP045 - the old spelling on purpose
               labelled: Annotated[int, "From Annotated."] = 3, name: str = "x",
               shade: Color = Color.BLUE) -> str:
    """Do everything at once.

    A second paragraph of the description.

    Args:
        text: Some text.
        count (int): How many,
            on two lines.
        ratio: A ratio.
        flag: A flag.
        unit: The unit.
        color: A color.
        labelled: Loses to the Annotated description.

    Returns:
        Nothing useful.
    """
    return text


def test_schema_from_hints_and_docstring() -> None:
    built = tool(everything)
    assert built.name == "everything"
    assert built.description == "Do everything at once.\n\nA second paragraph of the description."
    props = built.parameters["properties"]
    assert props["text"] == {"type": "string", "description": "Some text."}
    assert props["count"] == {"type": "integer", "description": "How many, on two lines."}
    assert props["ratio"] == {"type": "number", "description": "A ratio."}
    assert props["flag"] == {"type": "boolean", "description": "A flag."}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["unit"] == {"type": "string", "enum": ["C", "F"], "description": "The unit."}
    assert props["color"] == {"enum": ["red", "blue"], "description": "A color."}
    assert props["maybe"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert props["point"] == {
        "type": "object", "additionalProperties": False, "required": ["x"],
        "properties": {"x": {"type": "number"}, "y": {"type": "number"},
                       "tags": {"type": "array", "items": {"type": "string"}}}}
    assert props["where"] == {"type": "object", "additionalProperties": False,
                              "properties": {"column": {"type": "string"},
                                             "value": {"type": "integer"}}}
    assert props["who"] == {
        "type": "object", "additionalProperties": False, "required": ["age", "name"],
        "properties": {"name": {"type": "string"},
                       "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    assert props["anything"] == {}
    assert props["mixed"] == {"enum": [1, "one"]}
    assert props["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["labelled"] == {"type": "integer", "description": "From Annotated.",
                                 "default": 3}
    assert props["name"] == {"type": "string", "default": "x"}
    assert props["shade"] == {"enum": ["red", "blue"], "default": "blue"}
    assert built.parameters["required"] == [
        "text", "count", "ratio", "flag", "tags", "weights", "unit", "color", "maybe",
        "point", "where", "who", "anything", "mixed"]
    assert built.parameters["additionalProperties"] is False


def test_context_parameter_is_not_a_model_argument() -> None:
    def lookup(key: str, context: ToolContext) -> str:
        """Look a key up."""
        return key

    built = tool(lookup)
    assert built.context_param == "context"
    assert built.parameters == {"type": "object", "additionalProperties": False,
                                "properties": {"key": {"type": "string"}},
                                "required": ["key"]}


def _optional(key: str, context: ToolContext | None = None) -> str:
    """Look a key up (callable without a context in unit tests)."""
    return f"{key} from {context.call_id if context else None}"


def _old_optional(key: str, context: Optional[ToolContext] = None) -> str:  # noqa: UP045
    """Look a key up."""
    return f"{key} from {context.call_id if context else None}"


def _annotated(key: str, context: Annotated[ToolContext, "injected"]) -> str:
    """Look a key up."""
    return f"{key} from {context.call_id}"


@pytest.mark.parametrize("fn", [_optional, _old_optional, _annotated])
async def test_optional_context_parameter_is_injected(fn: Any) -> None:
    built = tool(fn)
    assert built.context_param == "context"
    assert built.parameters == {"type": "object", "additionalProperties": False,
                                "properties": {"key": {"type": "string"}},
                                "required": ["key"]}
    context = ToolContext(session_id="s", send_index=0, call_id="c7", tool_name=built.name,
                          attempt=1, idempotency_key=ToolContext.key_for("s", 0, "c7"))
    result = await ToolRegistry([built]).execute(
        ToolCallPart("c7", built.name, '{"key": "k"}'), context, ToolLimits())
    assert (result.content, result.is_error) == ("k from c7", False)


def test_no_arguments_and_options() -> None:
    @tool(name="ping-1", description="Says pong.", safe_to_repeat=True, timeout=2.5,
          max_output_chars=200)
    async def ping() -> str:
        return "pong"

    assert isinstance(ping, Tool)
    assert (ping.name, ping.description, ping.safe_to_repeat) == ("ping-1", "Says pong.", True)
    assert (ping.timeout, ping.max_output_chars) == (2.5, 200)
    assert ping.parameters == {"type": "object", "properties": {},
                               "additionalProperties": False}
    assert ping.spec.to_json() == {"name": "ping-1", "description": "Says pong.",
                                   "parameters": dict(ping.parameters)}

    def undocumented(x: int) -> int:
        return x

    assert tool(undocumented).description == "undocumented"


@pytest.mark.parametrize("name", ["", "has space", "dot.ted", "x" * 65, "emoji\u2603", "a/b"])
def test_invalid_tool_names(name: str) -> None:
    def fn() -> None:
        """A tool."""

    with pytest.raises(InvalidArgumentError):
        Tool(name=name, description="A tool.", parameters={"type": "object"}, fn=fn)
    with pytest.raises(InvalidArgumentError):
        make_tool(fn, name=name)  # an empty name too: it never falls back to fn.__name__


def test_longest_valid_name() -> None:
    def fn() -> None:
        """A tool."""

    assert make_tool(fn, name="A-_9" * 16).name == "A-_9" * 16


def test_duplicate_registration() -> None:
    def fn() -> None:
        """A tool."""

    registry = ToolRegistry([fn])
    with pytest.raises(InvalidArgumentError):
        registry.register(fn)
    with pytest.raises(InvalidArgumentError):
        ToolRegistry([fn, make_tool(fn)])
    registry.register(fn, name="fn_two")
    assert [t.name for t in registry] == ["fn", "fn_two"]
    assert [s.name for s in registry.specs()] == ["fn", "fn_two"]
    assert len(registry) == 2 and "fn_two" in registry and registry.get("nope") is None


def test_registry_decorator() -> None:
    registry = ToolRegistry()

    @registry.tool(safe_to_repeat=True)
    def read(key: str) -> str:
        """Read a key."""
        return key

    assert isinstance(read, Tool)
    assert registry.get("read") is read and read.safe_to_repeat


def with_datetime(when: datetime) -> None:
    """Unsupported: a datetime."""


def with_bytes(data: bytes) -> None:
    """Unsupported: bytes."""


def with_int_keys(table: dict[int, str]) -> None:
    """Unsupported: non-string keys."""


def with_object(thing: object) -> None:
    """Unsupported: a plain class."""


def with_nested(items: list[set[complex]]) -> None:
    """Unsupported deep inside."""


def positional_only(a: int, /) -> None:
    """Arguments are passed by name."""


def two_contexts(a: ToolContext, b: ToolContext) -> None:
    """Only one context."""


@pytest.mark.parametrize("fn", [with_datetime, with_bytes, with_int_keys, with_object,
                                with_nested, positional_only, two_contexts])
def test_unsupported_declarations_are_rejected(fn: Any) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        tool(fn)
    param = fn.__code__.co_varnames[0]
    if fn is not two_contexts:
        assert param in str(raised.value)


def test_unresolvable_annotation_is_rejected_cleanly() -> None:
    def broken(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        """A typo in an annotation."""

    def broken_context(x: int, ctx: NoSuchContext) -> None:  # type: ignore[name-defined]  # noqa: F821
        """A typo in the context's annotation."""

    for fn in (broken, broken_context):
        with pytest.raises(InvalidArgumentError) as raised:
            tool(fn)
        assert fn.__name__ in str(raised.value)
        assert "NoSuch" in str(raised.value)
        with pytest.raises(InvalidArgumentError):
            make_tool(fn)
