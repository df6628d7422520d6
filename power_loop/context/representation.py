"""How a finished send is recorded and rendered into later requests.

* :class:`VerbatimRepresentation` renders a finished send's exact messages.
* :class:`ProjectedRepresentation` renders it as a terse projection (what was asked,
  what was answered, which tools were used), kept in the ``projections`` table and
  rebuildable from the immutable message log at any time.

The send in progress is always rendered verbatim, whatever the representation. Implement
:class:`Representation` for other trade-offs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from power_loop.errors import InvalidArgumentError
from power_loop.llm.messages import Message


@runtime_checkable
class Representation(Protocol):
    """How finished sends look in later requests.

    ``stores_projections`` says whether :meth:`project` results are kept in the store.
    A rendering must be a pure function of the send's messages (or of its stored
    projection), so that every process builds the same request.
    """

    @property
    def name(self) -> str:
        """A short name (``verbatim``, ``projected``)."""
        ...

    @property
    def version(self) -> int:
        """Bumped when :meth:`project` changes, so stored projections are recomputed."""
        ...

    @property
    def stores_projections(self) -> bool:
        """Whether :meth:`project` results are kept in the ``projections`` table."""
        ...

    def project(self, send_index: int, messages: Sequence[Message]) -> Mapping[str, Any] | None:
        """What to store for a finished send (``None``: nothing)."""
        ...

    def render(self, send_index: int, messages: Sequence[Message] | None,
               projection: Mapping[str, Any] | None) -> list[Message]:
        """The messages standing for a finished send in a request."""
        ...


class VerbatimRepresentation:
    """Finished sends appear exactly as they were: every message, every tool call."""

    name: ClassVar[str] = "verbatim"
    version: ClassVar[int] = 1
    stores_projections: ClassVar[bool] = False

    def project(self, send_index: int, messages: Sequence[Message]) -> Mapping[str, Any] | None:
        return None

    def render(self, send_index: int, messages: Sequence[Message] | None,
               projection: Mapping[str, Any] | None) -> list[Message]:
        if messages is None:
            raise InvalidArgumentError("the verbatim representation needs the messages")
        return list(messages)

    def __repr__(self) -> str:
        return "VerbatimRepresentation()"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:max(0, limit - 1)] + "…"


def _tools_suffix(tools: Sequence[str], room: int) -> str:
    """`` [tools: a, b]``, naming as many tools as fit in ``room`` (``+N more`` for the rest)."""
    if not tools:
        return ""
    for shown in range(len(tools), 0, -1):
        rest = len(tools) - shown
        names = ", ".join(tools[:shown]) + (f", +{rest} more" if rest else "")
        if len(names) + 10 <= room:
            return f" [tools: {names}]"
    return f" [tools: {len(tools)}]"


class ProjectedRepresentation:
    """Finished sends appear as a question and a terse answer, with the tools used.

    Args:
        max_chars: The most characters a projection renders to (question and answer).
    """

    name: ClassVar[str] = "projected"
    version: ClassVar[int] = 1
    stores_projections: ClassVar[bool] = True

    def __init__(self, max_chars: int = 300) -> None:
        if max_chars < 40:
            raise InvalidArgumentError("ProjectedRepresentation.max_chars must be at least 40")
        self.max_chars = max_chars

    def __repr__(self) -> str:
        return f"ProjectedRepresentation(max_chars={self.max_chars})"

    def project(self, send_index: int, messages: Sequence[Message]) -> Mapping[str, Any]:
        asked = next((m.text for m in messages if m.role == "user"
                      and not m.meta.get("synthetic")), "")
        answers = [m for m in messages if m.role == "assistant" and m.text]
        answered = answers[-1].text if answers else ""
        tools: list[str] = []
        for message in messages:
            for call in message.tool_calls:
                if call.name not in tools:
                    tools.append(call.name)
        asked = _clip(asked, self.max_chars // 3)
        suffix = _tools_suffix(tools, self.max_chars // 3)
        answer_room = max(10, self.max_chars - len(asked) - len(suffix))
        return {"asked": asked, "answered": _clip(answered, answer_room), "tools": tools}

    def render(self, send_index: int, messages: Sequence[Message] | None,
               projection: Mapping[str, Any] | None) -> list[Message]:
        if projection is None:
            if messages is None:
                raise InvalidArgumentError("a projection needs the send's messages")
            projection = self.project(send_index, messages)
        suffix = _tools_suffix([str(t) for t in projection.get("tools") or []],
                               self.max_chars // 3)
        asked = str(projection.get("asked") or "(no question)")
        answered = str(projection.get("answered") or "(no answer)")
        return [Message.user(asked, projection=send_index),
                Message.assistant(f"{answered}{suffix}", projection=send_index)]
