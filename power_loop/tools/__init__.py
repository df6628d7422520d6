"""Tools: the ``@tool`` decorator, ``ToolRegistry``, and the context a call receives."""

from power_loop.tools.context import ToolContext
from power_loop.tools.registry import ToolLimits, ToolRegistry
from power_loop.tools.running import ToolOutcome
from power_loop.tools.tool import Tool, ToolError, make_tool, tool

__all__ = ["Tool", "ToolContext", "ToolError", "ToolLimits", "ToolOutcome", "ToolRegistry",
           "make_tool", "tool"]
