"""Skills folders written for a test."""

from __future__ import annotations

from pathlib import Path

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
