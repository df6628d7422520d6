"""Cross-session memory: what other conversations taught, recalled at the request's tail.

A :class:`MemoryProvider` is asked, at each model call, for what it knows that bears on
the current send, within a token budget the loop reserves when it decides to fold. Its
answer goes into the context message just before the current send, after the history,
so the cached prefix of the request stays byte-stable whatever memory returns.
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # the loop imports this package; a runtime import would be circular
    from power_loop.loop.results import SendResult

_WORD = re.compile(r"\w{3,}")


@runtime_checkable
class MemoryProvider(Protocol):
    """Recall across sessions. Implement it over your vector store or search index."""

    async def recall(self, session_id: str, query: str, *, budget_tokens: int) -> str | None:
        """What is worth knowing for ``query`` in ``session_id``, or ``None``.

        The answer should fit in ``budget_tokens`` (about four characters a token).
        """
        ...

    async def remember(self, session_id: str, result: SendResult) -> None:
        """Learn from a finished send (called after each one)."""
        ...


class KeywordMemory:
    """A small in-process memory: past answers of other sessions sharing words.

    Good for tests, demos and single-process apps; a real deployment plugs in its own
    :class:`MemoryProvider` over a shared index.
    """

    def __init__(self, capacity: int = 1_000) -> None:
        self._items: deque[tuple[str, str, frozenset[str]]] = deque(maxlen=capacity)

    async def recall(self, session_id: str, query: str, *, budget_tokens: int) -> str | None:
        words = frozenset(w.lower() for w in _WORD.findall(query))
        if not words:
            return None
        lines: list[str] = []
        room = budget_tokens * 4
        for owner, text, keys in reversed(self._items):
            if owner == session_id or not words & keys:
                continue
            line = f"- {text}"
            if len(line) > room:
                break
            lines.append(line)
            room -= len(line) + 1
        return "\n".join(lines) or None

    async def remember(self, session_id: str, result: SendResult) -> None:
        asked = next((m.text for m in result.messages if m.role == "user"), "")
        text = f"Q: {asked[:200]} A: {result.final_text[:300]}"
        self._items.append((session_id, text, frozenset(
            w.lower() for w in _WORD.findall(asked + " " + result.final_text))))
