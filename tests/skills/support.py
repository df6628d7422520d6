"""Skills folders written for a test."""

from __future__ import annotations

from pathlib import Path

from power_loop import LLMRequest, Turn, call_tool, reply

PDF_BODY = "# Filling PDF forms\n\nRead `reference.md` first, then run `scripts/fill.py`."
REFERENCE = "Field names are case-sensitive.\n"


def skill_file(name: str, description: str, body: str) -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}\n"


def write_skills(root: Path) -> Path:
    """A skills folder of two skills; ``pdf-forms`` has files beside its ``SKILL.md``."""
    pdf = root / "pdf-forms"
    (pdf / "scripts").mkdir(parents=True)
    (pdf / "SKILL.md").write_text(skill_file(
        "pdf-forms", "Fill PDF forms. Use when the user asks to fill a form.", PDF_BODY))
    (pdf / "reference.md").write_text(REFERENCE)
    (pdf / "scripts" / "fill.py").write_text("print('filled')\n")
    (pdf / ".secret").write_text("hidden")
    commit = root / "commit-messages"
    commit.mkdir()
    (commit / "SKILL.md").write_text(skill_file(
        "commit-messages", '"Write commit messages: a subject line, then why."',
        "Subject under 60 characters."))
    (root / "README.md").write_text("Files beside the skills' folders are ignored.\n")
    return root


def conversation(request: LLMRequest) -> Turn | str:
    """A model that plays from the conversation alone, so any process can play it: on
    "fill" it loads ``pdf-forms`` and reads its reference, then answers with what it read."""
    last = request.messages[-1]
    if last.role == "tool":
        result = last.tool_results[-1]
        if result.name == "load_skill" and not result.is_error:
            return call_tool("read_skill_file", {"skill": "pdf-forms", "path": "reference.md"})
        return reply(f"Done ({len(request.messages)} messages): {result.content[:60]}")
    if last.text in ("fill", "again"):
        return call_tool("load_skill", {"name": "pdf-forms"})
    return reply(f"You said {last.text!r}.")
