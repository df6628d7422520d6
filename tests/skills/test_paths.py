"""``read_skill_file`` reads inside the skill's folder and nowhere else.

Generated paths combine ``..``, absolute roots, backslashes, drive letters, NUL and other
control characters, lone surrogates, percent-encoding, fullwidth dots, hidden names and
symbolic links leading in and out. Every call ends in the text of a file of the skill's
folder or in an error result the model reads; never in a file outside it, never in an
exception out of the registry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import Skills, ToolCallPart, ToolContext, ToolError, ToolRegistry
from power_loop.tools.registry import ToolLimits
from tests.skills.support import REFERENCE, write_skills

SECRET = "SECRET-OUTSIDE-THE-SKILL"
LIMITS = ToolLimits()


@pytest.fixture(scope="module")
def skills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skills]:
    base = tmp_path_factory.mktemp("paths")
    (base / "outside.txt").write_text(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "inner.txt").write_text(SECRET)
    root = write_skills(base / "skills")
    (root / "commit-messages" / "SKILL.md").write_text(
        f"---\nname: commit-messages\ndescription: {SECRET}\n---\n{SECRET}\n")
    pdf = root / "pdf-forms"
    os.symlink(base / "outside.txt", pdf / "link-out")
    os.symlink(base / "outside", pdf / "dir-out")
    os.symlink(pdf / "reference.md", pdf / "link-in")
    os.symlink("../commit-messages/SKILL.md", pdf / "sibling")
    os.symlink("loop", pdf / "loop")
    os.mkfifo(pdf / "pipe")
    (pdf / "big.txt").write_text("x" * 2_000)
    (pdf / "binary.bin").write_bytes(b"\x00\x01\x02")
    (pdf / "latin1.txt").write_bytes(b"caf\xe9")
    yield Skills(root, max_file_bytes=1_000)


async def call(skills: Skills, arguments: object) -> tuple[str, bool]:
    registry = ToolRegistry(skills.tools())
    part = ToolCallPart("c1", "read_skill_file", json.dumps(arguments))
    context = ToolContext(session_id="s", send_index=0, call_id="c1",
                          tool_name="read_skill_file", idempotency_key="s:0:c1")
    result = (await registry.run(part, context, LIMITS)).result
    return result.content, result.is_error


async def test_files_of_the_folder_are_read(skills: Skills) -> None:
    assert await call(skills, {"skill": "pdf-forms", "path": "reference.md"}) == (
        REFERENCE, False)
    assert await call(skills, {"skill": "pdf-forms", "path": "./scripts/fill.py"}) == (
        "print('filled')\n", False)
    # A link that stays inside the folder is followed.
    assert await call(skills, {"skill": "pdf-forms", "path": "link-in"}) == (REFERENCE, False)


def test_the_listing_leaves_out_links_leading_out(skills: Skills) -> None:
    pdf = skills.get("pdf-forms")
    assert pdf is not None
    assert "link-out" not in pdf.files and "sibling" not in pdf.files
    assert {"link-in", "reference.md", "scripts/fill.py"} <= set(pdf.files)


@pytest.mark.parametrize(("path", "says"), [
    ("../commit-messages/SKILL.md", "leaves the skill's folder"),
    ("scripts/../../commit-messages/SKILL.md", "leaves the skill's folder"),
    ("/etc/passwd", "absolute"),
    ("C:/Windows/win.ini", "absolute"),
    ("..\\commit-messages\\SKILL.md", "separate folders with '/'"),
    ("link-out", "leads outside"),
    ("dir-out/inner.txt", "leads outside"),
    ("sibling", "leads outside"),
    ("loop", "cannot be resolved"),
    ("reference.md\x00.png", "control characters"),
    (".secret", "hidden"),
    ("scripts", "is a folder"),
    (".", "the skill's folder itself"),
    ("", "give the file's path"),
    ("pipe", "not a regular file"),
    ("big.txt", "over the 1000"),
    ("binary.bin", "binary"),
    ("latin1.txt", "not UTF-8"),
    ("%2e%2e/commit-messages/SKILL.md", "has no file"),
    ("\uff0e\uff0e/commit-messages/SKILL.md", "has no file"),
    ("missing.md", "has no file"),
])
async def test_paths_that_are_refused(skills: Skills, path: str, says: str) -> None:
    content, is_error = await call(skills, {"skill": "pdf-forms", "path": path})
    assert is_error and says in content, content
    assert SECRET not in content


async def test_bad_calls_are_errors_the_model_reads(skills: Skills) -> None:
    content, is_error = await call(skills, {"skill": "nope", "path": "reference.md"})
    assert is_error and "no skill named 'nope'" in content and "pdf-forms" in content
    content, is_error = await call(skills, {"skill": "pdf-forms", "path": 3})
    assert is_error and "invalid arguments" in content
    content, is_error = await call(skills, {"skill": "pdf-forms"})
    assert is_error and "invalid arguments" in content


def test_a_lone_surrogate_is_refused(skills: Skills) -> None:
    read = skills.tools()[1]
    with pytest.raises(ToolError, match="not valid Unicode"):
        read.fn(skill="pdf-forms", path="ref\udc80.md")


SEGMENTS = st.sampled_from(["..", ".", "", "reference.md", "scripts", "fill.py", "link-out",
                            "dir-out", "inner.txt", "link-in", "sibling", "loop", "pipe",
                            "commit-messages", "SKILL.md", "outside.txt", "%2e%2e",
                            "\uff0e\uff0e", "..\\..", "C:", "~", "\x00", "\udc80", ".secret",
                            "\u202e", " ", "...", "//"])


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.one_of(SEGMENTS, st.text(max_size=6)), max_size=6),
       absolute=st.booleans())
def test_generated_paths_never_reach_outside(skills: Skills, parts: list[str],
                                                   absolute: bool) -> None:
    path = ("/" if absolute else "") + "/".join(parts)
    read = skills.tools()[1]
    try:
        content = read.fn(skill="pdf-forms", path=path)
    except ToolError as exc:
        assert SECRET not in exc.message
        return
    own = (skills.path / "pdf-forms" / "SKILL.md").read_text()
    inside = {REFERENCE, "print('filled')\n", own}
    assert content in inside, (path, content[:80])
