"""Agent notes: a small durable scratchpad the agent (and AgenticFold) keeps per session.

Notes live in the ``notes`` table and are rendered into every request in one stable
place: a context message just before the current send, so changing a note never
disturbs the cached history before it. The agent edits them with the ``note_add``,
``note_update`` and ``note_delete`` tools; bounds keep them small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from power_loop.context.active import active_run
from power_loop.errors import InvalidArgumentError
from power_loop.store.context_ops import NoteRecord
from power_loop.tools.tool import Tool, ToolError, tool


@dataclass(frozen=True, slots=True)
class NoteLimits:
    """Bounds on a session's notes.

    Attributes:
        max_notes: The most notes a session holds.
        max_chars: The longest note.
    """

    max_notes: int = 20
    max_chars: int = 1_000

    def __post_init__(self) -> None:
        if self.max_notes < 1 or self.max_chars < 10:
            raise InvalidArgumentError("NoteLimits needs max_notes >= 1 and max_chars >= 10")

    def check_text(self, text: object) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError("a note needs non-empty text")
        if len(text) > self.max_chars:
            raise InvalidArgumentError(
                f"a note may have at most {self.max_chars} characters, not {len(text)}")
        return text.strip()


def render_notes(notes: Sequence[NoteRecord] | Sequence[tuple[int, str]]) -> str:
    """Notes as the model reads them: ``#id: text`` lines."""
    lines = []
    for note in notes:
        note_id, text = (note.note_id, note.text) if isinstance(note, NoteRecord) else note
        lines.append(f"#{note_id}: {text}")
    return "\n".join(lines)


class NoteLedger:
    """Note operations checked against the notes as they stand, applied later at once."""

    def __init__(self, notes: Sequence[NoteRecord], limits: NoteLimits) -> None:
        self._limits = limits
        self._existing = {n.note_id: n.text for n in notes}
        self._added: list[str] = []
        self.ops: list[Mapping[str, Any]] = []

    def render(self) -> str:
        return render_notes(sorted(self._existing.items()))

    def add(self, text: object) -> str:
        clean = self._limits.check_text(text)
        if len(self._existing) + len(self._added) >= self._limits.max_notes:
            raise InvalidArgumentError(
                f"there are already {self._limits.max_notes} notes; update or delete one")
        self._added.append(clean)
        self.ops.append({"op": "add", "text": clean})
        return "Note saved."

    def _known(self, note_id: object) -> int:
        # A JSON boolean is no note id, though Python counts True as 1.
        if isinstance(note_id, bool) or not isinstance(note_id, int):
            raise InvalidArgumentError(f"a note id is an integer, not {_shown(note_id)}")
        if note_id not in self._existing:
            shown = f"#{note_id}" if abs(note_id) < 10**18 else "with that id"
            raise InvalidArgumentError(f"there is no note {shown}")
        return note_id

    def update(self, note_id: object, text: object) -> str:
        note_id = self._known(note_id)
        clean = self._limits.check_text(text)
        self._existing[note_id] = clean
        self.ops.append({"op": "update", "note_id": note_id, "text": clean})
        return f"Note #{note_id} updated."

    def delete(self, note_id: object) -> str:
        note_id = self._known(note_id)
        del self._existing[note_id]
        self.ops.append({"op": "delete", "note_id": note_id})
        return f"Note #{note_id} deleted."


def _shown(value: object) -> str:
    """A model's value in an error it reads: short, and never too deep or big to print."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    return f"a {type(value).__name__}"


async def _apply(op: Mapping[str, Any], tool_name: str) -> Mapping[str, Any]:
    run = active_run(tool_name)
    try:
        return await run.apply_note(op)
    except InvalidArgumentError as exc:
        raise ToolError(f"Error: {exc.message}") from None


def note_tools(limits: NoteLimits) -> list[Tool]:
    """``note_add``, ``note_update`` and ``note_delete`` for the agent, within ``limits``."""

    @tool
    async def note_add(text: str) -> str:
        """Save a durable note: a fact, decision or open task to remember across turns.

        Args:
            text: The note.
        """
        try:
            clean = limits.check_text(text)
        except InvalidArgumentError as exc:
            raise ToolError(f"Error: {exc.message}") from None
        applied = await _apply({"op": "add", "text": clean}, "note_add")
        return f"Saved note #{applied['note_id']}."

    @tool
    async def note_update(note_id: int, text: str) -> str:
        """Replace the text of a note.

        Args:
            note_id: The note's number (#id in the notes).
            text: The new text.
        """
        try:
            clean = limits.check_text(text)
        except InvalidArgumentError as exc:
            raise ToolError(f"Error: {exc.message}") from None
        await _apply({"op": "update", "note_id": note_id, "text": clean}, "note_update")
        return f"Note #{note_id} updated."

    @tool
    async def note_delete(note_id: int) -> str:
        """Delete a note that is no longer true or useful.

        Args:
            note_id: The note's number (#id in the notes).
        """
        await _apply({"op": "delete", "note_id": note_id}, "note_delete")
        return f"Note #{note_id} deleted."

    return [note_add, note_update, note_delete]
