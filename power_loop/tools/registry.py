"""``ToolRegistry``: the tools a loop offers, and how one call is carried out.

Whatever the model gets wrong becomes an error result it can read and correct, never an
exception in the loop: malformed JSON, a non-object, an unknown tool, arguments that
fail the schema. So does whatever the tool does (see :mod:`power_loop.tools.running`):
raise anything at all, return what cannot be shown, run out of time. Results and errors
are bounded in size, with a visible marker where they are cut. The cancellation of the
send is the one thing that propagates (the loop is being stopped).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from power_loop.errors import InvalidArgumentError
from power_loop.llm.messages import ToolCallPart, ToolResultPart
from power_loop.llm.service import ToolSpec
from power_loop.tools.context import ToolContext
from power_loop.tools.rendering import MAX_ERROR_CHARS, clean, truncate
from power_loop.tools.running import ToolOutcome, run_call
from power_loop.tools.sources import ToolListChange, ToolSource, diff_tools
from power_loop.tools.tool import MIN_OUTPUT_CHARS, Tool, make_tool

__all__ = ["MAX_ERROR_CHARS", "ToolLimits", "ToolOutcome", "ToolRegistry", "truncate"]


@dataclass(frozen=True, slots=True)
class ToolLimits:
    """Defaults applied to tools that don't set their own."""

    timeout: float | None = 120.0
    max_output_chars: int = 50_000

    def __post_init__(self) -> None:
        if self.max_output_chars < MIN_OUTPUT_CHARS:
            raise InvalidArgumentError(
                f"ToolLimits.max_output_chars must be at least {MIN_OUTPUT_CHARS}")


class ToolRegistry:
    """An ordered set of tools, by name.

    Example::

        registry = ToolRegistry([add, search])
        @registry.tool(safe_to_repeat=True)
        def lookup(key: str) -> str: ...
    """

    def __init__(self, tools: Iterable[Tool | ToolSource | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._specs: tuple[ToolSpec, ...] | None = None
        self._sources: dict[str, ToolSource] = {}
        # Each source's tools as last installed, and the listing version they came from.
        self._sourced: dict[str, tuple[int, dict[str, Tool]]] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Tool | ToolSource | Callable[..., Any], **options: Any) -> Any:
        """Add a :class:`Tool`, a tool source (an :class:`~power_loop.MCPServer`), or a
        function made into a tool with ``options``."""
        if isinstance(item, ToolSource) and not isinstance(item, Tool):
            if item.source_name in self._sources:
                raise InvalidArgumentError(
                    f"two tool sources are named {item.source_name!r}: give each its own name")
            self._sources[item.source_name] = item
            return item
        built = item if isinstance(item, Tool) else make_tool(item, **options)
        if built.name in self._tools:
            raise InvalidArgumentError(f"a tool named {built.name!r} is already registered")
        self._tools[built.name] = built
        self._specs = None
        return built

    @property
    def sources(self) -> tuple[ToolSource, ...]:
        """The tool sources, in registration order."""
        return tuple(self._sources.values())

    async def refresh(self) -> list[tuple[str, ToolListChange]]:
        """Ask every source for its current tools and install them; returns the changes
        seen (the source's name and what changed), for the send to report.

        Raises:
            PowerLoopError: A source had no tools to offer (it could not be reached and
                this process never listed it).
            InvalidArgumentError: A source's tool is named like a plain tool.
        """
        changes: list[tuple[str, ToolListChange]] = []
        for name, source in self._sources.items():
            listing = await source.list_tools()
            installed = self._sourced.get(name)
            if installed is not None and installed[0] == listing.version:
                continue
            tools = {t.name: t for t in listing.tools}
            clash = next((n for n in tools if n in self._tools), None)
            if clash is not None:
                raise InvalidArgumentError(
                    f"tool source {name!r} offers {clash!r}, the name of another tool: "
                    "rename one of them")
            if installed is not None:
                change = diff_tools([t.spec for t in installed[1].values()],
                                    [t.spec for t in tools.values()])
            else:
                change = listing.found_change or ToolListChange()
            if change:
                changes.append((name, change))
            self._sourced[name] = (listing.version, tools)
            self._specs = None
        return changes

    def _all(self) -> Iterator[Tool]:
        return itertools.chain(self._tools.values(),
                               *(tools.values() for _, tools in self._sourced.values()))

    def tool(self, **options: Any) -> Callable[[Callable[..., Any]], Tool]:
        """Decorator registering a function: ``@registry.tool(safe_to_repeat=True)``."""
        return lambda fn: self.register(fn, **options)

    def get(self, name: str) -> Tool | None:
        found = self._tools.get(name)
        if found is None:
            for _, tools in self._sourced.values():
                found = tools.get(name)
                if found is not None:
                    break
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[Tool]:
        return self._all()

    def __len__(self) -> int:
        return len(self._tools) + sum(len(tools) for _, tools in self._sourced.values())

    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools as the model sees them: in registration order, then each source's
        (as of the last :meth:`refresh`)."""
        if self._specs is None:
            self._specs = tuple(t.spec for t in self._all())
        return self._specs

    async def execute(self, call: ToolCallPart, context: ToolContext,
                      limits: ToolLimits) -> ToolResultPart:
        """Carry out one call; every failure becomes an error result."""
        return (await self.run(call, context, limits)).result

    async def run(self, call: ToolCallPart, context: ToolContext,
                  limits: ToolLimits) -> ToolOutcome:
        """Carry out one call: the result, and what the tool raised if it failed.

        Every failure becomes an error result; only the cancellation of the calling task
        propagates.
        """

        def error(message: str) -> ToolOutcome:
            return ToolOutcome(ToolResultPart(call.id, call.name,
                                              clean(truncate(message, MAX_ERROR_CHARS)), True))

        found = self.get(call.name)
        if found is None:
            available = ", ".join(t.name for t in self._all()) or "none"
            return error(f"Error: unknown tool {call.name[:100]!r}. Available tools: "
                         f"{available}.")
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            return error(f"Error: the arguments for {call.name!r} are not valid JSON ({exc}). "
                         "Send a JSON object.")
        if not isinstance(arguments, dict):
            return error(f"Error: the arguments for {call.name!r} must be a JSON object, not "
                         f"{type(arguments).__name__}.")
        try:
            found.validate(arguments)
        except fastjsonschema.JsonSchemaValueException as exc:
            schema = json.dumps(found.parameters, ensure_ascii=False)
            return error(f"Error: invalid arguments for {call.name!r}: {exc.message}. "
                         f"Expected schema: {schema}")
        timeout = found.timeout if found.timeout is not None else limits.timeout
        limit = found.max_output_chars or limits.max_output_chars
        return await run_call(found, call, arguments, context, deadline=timeout,
                              max_output_chars=limit)
