"""The two tools a :class:`~power_loop.Skills` offers: ``load_skill`` and ``read_skill_file``.

Both only read, so both are safe to repeat: a call whose outcome a crash lost is run
again on resume. What they return is a tool result like any other, stored in the
session's history: a request rebuilt later (by any process) carries the text the model
saw then, whatever the file says now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from power_loop.errors import ToolError
from power_loop.skills.files import MAX_LISTED_FILES, confined, read_text
from power_loop.tools.tool import Tool, make_tool

if TYPE_CHECKING:
    from power_loop.skills.library import Skill, Skills

_LOAD_INTRO = (
    "Load a skill: instructions for a kind of task, sometimes with files to read. "
    "Before you start a task that one of the skills below describes, load that skill and "
    "follow what it says.\n\nSkills:\n")


def skill_tools(skills: Skills) -> tuple[Tool, ...]:
    """The tools of ``skills`` (built once per :class:`Skills`)."""

    def find(name: object) -> Skill:
        found = skills.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(s.name for s in skills) or "none"
            shown = repr(name[:100]) if isinstance(name, str) else repr(name)
            raise ToolError(f"Error: there is no skill named {shown}. Skills: {known}.")
        return found

    async def load_skill(name: str) -> str:  # from memory: no thread needed
        """Load a skill's instructions.

        Args:
            name: The skill's name, as listed.
        """
        skill = find(name)
        text = f"# Skill: {skill.name}\n\n{skill.body}"
        if skill.files:
            shown = skill.files[:MAX_LISTED_FILES]
            more = len(skill.files) - len(shown)
            text += ("\n\n---\nFiles of this skill (read one with read_skill_file):\n"
                     + "\n".join(f"- {f}" for f in shown)
                     + (f"\n- ... and {more} more" if more else ""))
        return text

    def read_skill_file(skill: str, path: str) -> str:
        """Read a file of a skill's folder (one its instructions mention).

        Args:
            skill: The skill's name.
            path: The file's path inside the skill's folder, e.g. "reference.md".
        """
        found = find(skill)
        real = confined(found.folder, path)
        return read_text(real, repr(path[:200]), max_bytes=skills.max_file_bytes)

    load = make_tool(load_skill, description=_LOAD_INTRO + skills.catalog(),
                     safe_to_repeat=True, max_output_chars=skills.max_skill_bytes + 20_000)
    read = make_tool(read_skill_file, safe_to_repeat=True,
                     max_output_chars=skills.max_file_bytes + 1_000)
    return load, read
