"""Carrying out one call: arguments, errors, timeouts, size caps (no backend)."""

from __future__ import annotations

import asyncio
import enum
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    InvalidArgumentError,
    ToolCallPart,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResultPart,
    tool,
)
from power_loop.tools import ToolLimits, make_tool
from power_loop.tools.registry import MAX_ERROR_CHARS

LIMITS = ToolLimits(timeout=5.0, max_output_chars=1_000)


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


@dataclass
class Box:
    width: int
    height: int = 1


@dataclass
class Crate:
    box: Box


def context(call_id: str = "c1", name: str = "t") -> ToolContext:
    return ToolContext(session_id="s", send_index=0, call_id=call_id, tool_name=name,
                       idempotency_key=ToolContext.key_for("s", 0, call_id))


def split_marker(content: str) -> tuple[str, int, int]:
    """A truncated output's kept text, and the kept and total counts its marker states."""
    match = re.fullmatch(r"(.*)\n\[\.\.\. truncated: showing ([\d,]+) of ([\d,]+) "
                         r"characters\]", content, re.DOTALL)
    assert match is not None, content[-80:]
    return match[1], int(match[2].replace(",", "")), int(match[3].replace(",", ""))


async def run(registry: ToolRegistry, name: str, arguments: Any,
              limits: ToolLimits = LIMITS) -> ToolResultPart:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return await registry.execute(ToolCallPart("c1", name, raw), context(name=name), limits)


async def test_sync_tools_run_in_a_thread_and_async_tools_in_the_loop() -> None:
    def sync_where() -> int:
        """Which thread runs me."""
        return threading.get_ident()

    async def async_where() -> int:
        """Which thread runs me."""
        return threading.get_ident()

    registry = ToolRegistry([sync_where, async_where])
    here = threading.get_ident()
    assert int((await run(registry, "sync_where", {})).content) != here
    assert int((await run(registry, "async_where", {})).content) == here


async def test_arguments_are_converted_and_outputs_rendered() -> None:
    seen: list[Any] = []

    def build(size: Size, box: Box, scale: float = 1.0) -> dict[str, Any]:
        """Build a box."""
        seen.extend([size, box, scale])
        return {"area": box.width * box.height * scale, "size": size.value, "none": None}

    def nothing() -> None:
        """Return nothing."""

    registry = ToolRegistry([build, nothing])
    result = await run(registry, "build", {"size": "l", "box": {"width": 2, "height": 3}})
    assert result == ToolResultPart("c1", "build", '{"area": 6.0, "size": "l", "none": null}')
    assert seen == [Size.LARGE, Box(2, 3), 1.0]
    assert await run(registry, "nothing", {}) == ToolResultPart("c1", "nothing", "", False)


async def test_context_is_injected() -> None:
    def whoami(ctx: ToolContext) -> str:
        """Report the call's context."""
        return f"{ctx.tool_name} {ctx.call_id} {ctx.idempotency_key} {ctx.attempt}"

    result = await run(ToolRegistry([whoami]), "whoami", {})
    assert result.content == "whoami c1 s:0:c1 1"


async def test_tool_error_versus_other_exceptions() -> None:
    def refuses(reason: str) -> str:
        """Refuse politely."""
        raise ToolError(f"cannot do that: {reason}")

    async def crashes() -> str:
        """Fail unexpectedly."""
        raise ValueError("boom")

    registry = ToolRegistry([refuses, crashes])
    refused = await run(registry, "refuses", {"reason": "no"})
    assert refused == ToolResultPart("c1", "refuses", "cannot do that: no", True)
    crashed = await run(registry, "crashes", {})
    assert crashed.is_error
    assert crashed.content == "Error: tool 'crashes' failed: ValueError: boom"


async def test_timeouts() -> None:
    finished = asyncio.Event()

    @tool(timeout=0.05)
    async def slow() -> str:
        """Take forever."""
        await asyncio.sleep(30)
        finished.set()
        return "done"

    async def default_slow() -> str:
        """Take forever under the loop's default limit."""
        await asyncio.sleep(30)
        return "done"

    registry = ToolRegistry([slow, default_slow])
    result = await run(registry, "slow", {})
    assert result.is_error
    assert result.content == "Error: tool 'slow' did not finish within 0.05s and was abandoned."
    result = await run(registry, "default_slow", {}, ToolLimits(timeout=0.05))
    assert result.is_error and "within 0.05s" in result.content
    assert not finished.is_set()


async def test_a_tools_own_timeout_error_is_not_the_deadline() -> None:
    async def fetch() -> str:
        """Call a service that times out on its own."""
        raise TimeoutError("upstream took too long")

    result = await run(ToolRegistry([fetch]), "fetch", {})
    assert result.is_error
    assert result.content == "Error: tool 'fetch' failed: TimeoutError: upstream took too long"


async def test_output_is_truncated_with_a_marker() -> None:
    def long(n: int) -> str:
        """Return n characters."""
        return "x" * n

    @tool(max_output_chars=600)
    def own_cap(n: int) -> str:
        """Return n characters."""
        return "y" * n

    registry = ToolRegistry([long, own_cap])
    exact = await run(registry, "long", {"n": 250}, ToolLimits(max_output_chars=250))
    assert exact.content == "x" * 250

    cut = await run(registry, "long", {"n": 5000}, ToolLimits(max_output_chars=250))
    kept_text, kept, total = split_marker(cut.content)
    assert not cut.is_error and len(cut.content) <= 250
    assert (kept_text, total) == ("x" * kept, 5000) and kept > 0

    own = await run(registry, "own_cap", {"n": 5000}, ToolLimits(max_output_chars=250))
    assert 250 < len(own.content) <= 600
    assert split_marker(own.content)[2] == 5000


def _long() -> str:
    """Return a lot."""
    return "z" * 5000


@pytest.mark.parametrize("cap", [0, 20, 199])
def test_an_output_cap_too_small_for_the_marker_is_rejected(cap: int) -> None:
    # Below 200 characters the truncation marker alone would exceed the cap.
    with pytest.raises(InvalidArgumentError):
        ToolLimits(max_output_chars=cap)
    with pytest.raises(InvalidArgumentError):
        tool(max_output_chars=cap)(_long)
    with pytest.raises(InvalidArgumentError):
        make_tool(_long, max_output_chars=cap)
    with pytest.raises(InvalidArgumentError):
        AgentLoopConfig(max_tool_output_chars=cap)


async def test_the_smallest_output_cap_is_honoured() -> None:
    cut = await run(ToolRegistry([make_tool(_long, max_output_chars=200)]), "_long", {})
    kept_text, kept, total = split_marker(cut.content)
    assert len(cut.content) <= 200 and (kept_text, total) == ("z" * kept, 5000) and kept > 0
    config = AgentLoopConfig(max_tool_output_chars=200)
    cut = await run(ToolRegistry([_long]), "_long", {},
                    ToolLimits(max_output_chars=config.max_tool_output_chars))
    assert len(cut.content) <= 200 and split_marker(cut.content)[1] > 0


async def test_errors_are_bounded() -> None:
    def refuses() -> str:
        """Refuse verbosely."""
        raise ToolError("e" * 100_000)

    def crashes() -> str:
        """Crash verbosely."""
        raise RuntimeError("r" * 100_000)

    registry = ToolRegistry([refuses, crashes])
    prefix = "Error: tool 'crashes' failed: RuntimeError: "
    for name, full in (("refuses", "e" * 100_000), ("crashes", prefix + "r" * 100_000)):
        result = await run(registry, name, {}, ToolLimits(max_output_chars=1_000_000))
        assert result.is_error
        kept_text, kept, total = split_marker(result.content)
        assert len(result.content) <= MAX_ERROR_CHARS and kept > MAX_ERROR_CHARS // 2
        assert (kept_text, total) == (full[:kept], len(full))
    unknown = await run(registry, "x" * 5000, {})
    assert unknown.is_error and len(unknown.content) <= MAX_ERROR_CHARS


@pytest.mark.parametrize(("arguments", "expected"), [
    ("{not json", "are not valid JSON"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('"text"', "must be a JSON object, not str"),
    ("null", "must be a JSON object, not NoneType"),
    ({"a": "one", "b": 2}, "invalid arguments for 'add'"),
    ({"a": 1}, "invalid arguments for 'add'"),
    ({"a": 1, "b": 2, "c": 3}, "invalid arguments for 'add'"),
    ({"a": True, "b": 2}, "invalid arguments for 'add'"),
    ({"a": 1.5, "b": 2}, "invalid arguments for 'add'"),
])
async def test_bad_arguments_become_error_results(arguments: Any, expected: str) -> None:
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add."""
        calls.append((a, b))
        return a + b

    result = await run(ToolRegistry([add]), "add", arguments)
    assert result.is_error and expected in result.content
    assert calls == []


async def test_empty_arguments_mean_no_arguments() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    assert (await run(ToolRegistry([ping]), "ping", "")).content == "pong"


async def test_unknown_tool_lists_the_available_ones() -> None:
    def a() -> None:
        """A."""

    def b() -> None:
        """B."""

    result = await run(ToolRegistry([a, b]), "c", {})
    assert result == ToolResultPart("c1", "c", "Error: unknown tool 'c'. Available tools: a, b.",
                                    True)
    empty = await run(ToolRegistry(), "c", {})
    assert empty.content.endswith("Available tools: none.")


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        """Hang."""
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(run(ToolRegistry([hang]), "hang", {}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_enum_and_dataclass_arguments_are_converted() -> None:
    seen: list[Any] = []

    def pack(size: Size | None, boxes: list[Box], crate: Crate, by_name: dict[str, Size],
             pair: tuple[Size, Box], sizes: list[Size] | None = None) -> str:
        """Pack boxes."""
        seen.extend([size, boxes, crate, by_name, pair, sizes])
        return "packed"

    result = await run(ToolRegistry([pack]), "pack", {
        "size": "s", "boxes": [{"width": 1}, {"width": 2, "height": 3}],
        "crate": {"box": {"width": 2}}, "by_name": {"a": "l"},
        "pair": ["l", {"width": 4}], "sizes": ["s", "l"]})
    assert result.content == "packed", result.content
    assert seen == [Size.SMALL, [Box(1), Box(2, 3)], Crate(Box(2)), {"a": Size.LARGE},
                    (Size.LARGE, Box(4)), [Size.SMALL, Size.LARGE]]
    assert type(seen[4]) is tuple

    seen.clear()
    result = await run(ToolRegistry([pack]), "pack", {
        "size": None, "boxes": [], "crate": {"box": {"width": 2}}, "by_name": {},
        "pair": ["s", {"width": 1}]})
    assert result.content == "packed", result.content
    assert seen == [None, [], Crate(Box(2)), {}, (Size.SMALL, Box(1)), None]
