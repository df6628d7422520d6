"""Typed events (and, later, hooks and sinks)."""

from power_loop.events.types import (
    Event,
    FoldFinished,
    FoldStarted,
    RoundFinished,
    RoundStarted,
    SendFinished,
    SendStarted,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
    UsageUpdated,
)

__all__ = [
    "Event",
    "FoldFinished",
    "FoldStarted",
    "RoundFinished",
    "RoundStarted",
    "SendFinished",
    "SendStarted",
    "TextChunk",
    "ToolCallFinished",
    "ToolCallStarted",
    "UsageUpdated",
]
