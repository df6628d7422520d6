"""Reading a skills folder: the catalog, the bodies, and every folder that is refused."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from power_loop import (
    ConfigurationError,
    InvalidArgumentError,
    MissingDriverError,
    SkillError,
    Skills,
    Tool,
)
from tests.skills.support import PDF_BODY, skill_file, write_skills


def test_a_folder_becomes_a_sorted_catalog_and_read_only_tools(tmp_path: Path) -> None:
    skills = Skills(write_skills(tmp_path))
    assert [s.name for s in skills] == ["commit-messages", "pdf-forms"]
    assert skills.catalog() == (
        "- commit-messages: Write commit messages: a subject line, then why.\n"
        "- pdf-forms: Fill PDF forms. Use when the user asks to fill a form.")
    pdf = skills.get("pdf-forms")
    assert pdf is not None and pdf.body == PDF_BODY
    assert pdf.files == ("reference.md", "scripts/fill.py")  # hidden ones left out
    assert pdf.folder == (tmp_path / "pdf-forms").resolve()
    load, read = skills.tools()
    assert (load.name, read.name) == ("load_skill", "read_skill_file")
    assert load.safe_to_repeat and read.safe_to_repeat
    assert skills.catalog() in load.description
    assert skills.tools() is skills.tools()  # built once
    assert "pdf-forms" in skills and "nope" not in skills and len(skills) == 2


def test_the_same_folder_gives_the_same_tool_specs(tmp_path: Path) -> None:
    root = write_skills(tmp_path)
    first, second = Skills(root), Skills(str(root))
    assert [t.spec for t in first.tools()] == [t.spec for t in second.tools()]


def test_an_empty_folder_offers_no_skill(tmp_path: Path) -> None:
    skills = Skills(tmp_path)
    assert len(skills) == 0 and skills.catalog() == "(none)"
    assert all(isinstance(t, Tool) for t in skills.tools())


def test_bom_and_crlf_are_the_same_skill_as_plain_lf(tmp_path: Path) -> None:
    text = skill_file("notes", "Take notes.", "Line one.\nLine two.")
    plain, windows = tmp_path / "plain", tmp_path / "windows"
    for root, data in ((plain, text.encode()),
                       (windows, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())):
        (root / "notes").mkdir(parents=True)
        (root / "notes" / "SKILL.md").write_bytes(data)
    assert [t.spec for t in Skills(plain).tools()] == [t.spec for t in Skills(windows).tools()]
    assert Skills(windows).get("notes").body == "Line one.\nLine two."  # type: ignore[union-attr]


def refused(root: Path, reason: str) -> SkillError:
    with pytest.raises(SkillError) as caught:
        Skills(root)
    assert caught.value.reason == reason, caught.value.message
    assert caught.value.code == "skill_invalid"
    assert isinstance(caught.value, ConfigurationError)
    return caught.value


def test_a_missing_folder_or_a_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere", "not_found")
    (tmp_path / "file").write_text("not a folder")
    refused(tmp_path / "file", "not_a_folder")


def test_one_skill_folder_passed_as_the_skills_folder_is_refused(tmp_path: Path) -> None:
    write_skills(tmp_path)
    error = refused(tmp_path / "pdf-forms", "not_a_folder")
    assert "pass the folder holding" in error.message


def test_a_skill_folder_without_a_regular_skill_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    refused(tmp_path, "no_skill_file")
    (tmp_path / "empty" / "SKILL.md").mkdir()  # a folder where the file should be
    refused(tmp_path, "no_skill_file")
    (tmp_path / "empty" / "SKILL.md").rmdir()
    os.mkfifo(tmp_path / "empty" / "SKILL.md")  # refused, not waited on
    refused(tmp_path, "no_skill_file")
    os.unlink(tmp_path / "empty" / "SKILL.md")
    os.symlink(tmp_path / "gone", tmp_path / "empty" / "SKILL.md")
    refused(tmp_path, "no_skill_file")


def test_a_name_that_is_not_the_folder_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "SKILL.md").write_text(skill_file("two", "A skill.", "Body."))
    refused(tmp_path, "name_mismatch")


def test_a_name_outside_lowercase_and_hyphens_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Bad_Name").mkdir()
    (tmp_path / "Bad_Name" / "SKILL.md").write_text(skill_file("Bad_Name", "A skill.", "B."))
    refused(tmp_path, "invalid_name")


def test_an_oversized_skill_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "SKILL.md").write_text(skill_file("big", "Big.", "x" * 5_000))
    error = refused_with(tmp_path, max_skill_bytes=1_000)
    assert error.reason == "too_large"
    assert Skills(tmp_path, max_skill_bytes=10_000).get("big") is not None


def refused_with(root: Path, **options: int) -> SkillError:
    with pytest.raises(SkillError) as caught:
        Skills(root, **options)
    return caught.value


@pytest.mark.parametrize("value", [0, 999, 10**8, True, 1.5, "1000"])
def test_limits_out_of_range_are_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Skills(tmp_path, max_file_bytes=value)  # type: ignore[arg-type]


def test_a_symlinked_skill_folder_is_read_through_its_link(tmp_path: Path) -> None:
    shared = write_skills(tmp_path / "shared")
    (tmp_path / "mine").mkdir()
    os.symlink(shared / "pdf-forms", tmp_path / "mine" / "pdf-forms")
    skills = Skills(tmp_path / "mine")
    found = skills.get("pdf-forms")
    assert found is not None and found.folder == (shared / "pdf-forms").resolve()


def test_without_pyyaml_the_error_names_the_extra(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_skills(tmp_path)
    monkeypatch.setitem(sys.modules, "yaml", None)  # what `import yaml` meets when absent
    with pytest.raises(MissingDriverError) as caught:
        Skills(tmp_path)
    assert caught.value.extra == "skills" and "power-loop[skills]" in caught.value.message
