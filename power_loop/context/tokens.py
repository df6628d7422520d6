"""Token counting: a pluggable counter, calibrated by what the provider reports.

The loop needs token counts before a request is made (to decide when to fold), when no
provider has counted anything yet. A :class:`TokenCounter` estimates; the estimate is
then scaled by how far the previous estimate was from the provider's own count of the
same request (kept in each answer's ``meta``), so a fast estimate stays honest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from power_loop.llm.messages import Message, TextPart, ToolCallPart, ToolResultPart, Usage
from power_loop.llm.service import ToolSpec

MESSAGE_OVERHEAD = 4
"""Tokens a message costs beyond its text (role, separators), as providers count it."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens in text; implement it with your provider's tokenizer if you like."""

    def count_text(self, text: str) -> int:
        """Tokens in ``text``."""
        ...


class EstimatingCounter:
    """A fast estimate: one token per ``chars_per_token`` characters (default 4)."""

    def __init__(self, chars_per_token: float = 4.0) -> None:
        self.chars_per_token = chars_per_token

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) if text else 0

    def __repr__(self) -> str:
        # Equal reprs count alike: loops built with equal counters share cached windows.
        return f"EstimatingCounter(chars_per_token={self.chars_per_token!r})"


def count_message(counter: TokenCounter, message: Message) -> int:
    """Tokens of one message as a request carries it."""
    total = MESSAGE_OVERHEAD
    for part in message.parts:
        if isinstance(part, TextPart):
            total += counter.count_text(part.text)
        elif isinstance(part, ToolCallPart):
            total += counter.count_text(part.name) + counter.count_text(part.arguments) + 4
        elif isinstance(part, ToolResultPart):
            total += counter.count_text(part.content) + 4
    return total


def count_messages(counter: TokenCounter, messages: Iterable[Message]) -> int:
    return sum(count_message(counter, m) for m in messages)


def count_tools(counter: TokenCounter, tools: Sequence[ToolSpec]) -> int:
    return sum(counter.count_text(t.name) + counter.count_text(t.description)
               + counter.count_text(str(dict(t.parameters))) + 8 for t in tools)


def calibration(history: Sequence[Message]) -> float:
    """Actual over estimated input tokens of the latest answer that recorded both."""
    for message in reversed(history):
        estimate = message.meta.get("input_estimate") if message.role == "assistant" else None
        if isinstance(estimate, int) and estimate > 0:
            usage = Usage.from_json(message.meta.get("usage"))
            actual = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            if actual > 0:
                return min(3.0, max(0.5, actual / estimate))
            return 1.0
    return 1.0
