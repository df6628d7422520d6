"""Tool sources: tools a loop finds out about when it runs, not when it is built.

An MCP server is one: its tools are only known once it has been asked (see
:mod:`power_loop.mcp`). A :class:`ToolRegistry <power_loop.tools.registry.ToolRegistry>`
takes sources beside plain tools and asks each for its current listing at the start of
every send; each source's tools follow the plain ones, in the order the sources were
given, each source's in its own stable order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from power_loop.llm.service import ToolSpec
from power_loop.tools.tool import Tool


@dataclass(frozen=True, slots=True)
class ToolListChange:
    """How a source's tool list differs from the one seen before (names as the model
    sees them)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_tools(before: Sequence[ToolSpec], after: Sequence[ToolSpec]) -> ToolListChange:
    """What changed between two listings of one source."""
    old = {s.name: s for s in before}
    new = {s.name: s for s in after}
    return ToolListChange(
        added=tuple(n for n in new if n not in old),
        removed=tuple(n for n in old if n not in new),
        changed=tuple(n for n in new if n in old and new[n] != old[n]))


@dataclass(frozen=True, slots=True)
class ToolListing:
    """A source's tools as of now.

    Attributes:
        tools: The tools, in the order the model sees them.
        version: Bumped each time the source found its list changed (in this process).
        found_change: Set on the listing whose fetch found the change (so the send
            that found it reports it even when its registry is new).
    """

    tools: tuple[Tool, ...]
    version: int = 0
    found_change: ToolListChange | None = field(default=None)


@runtime_checkable
class ToolSource(Protocol):
    """Something that lists tools when asked (an MCP server)."""

    @property
    def source_name(self) -> str:
        """A name unique among a loop's sources (it prefixes the tools' names)."""

    async def list_tools(self) -> ToolListing:
        """The current tools; raises a :class:`~power_loop.PowerLoopError` when there
        are none to offer (the send then stays pending, as after a model outage)."""
