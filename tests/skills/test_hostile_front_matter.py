"""Hostile ``SKILL.md`` files: each is read as a skill or refused with a ``SkillError``.

Generated front matter mixes the keys that matter with duplicates, non-text values,
anchors and aliases, tags (``!!python/object...``), block scalars, huge values and
arbitrary text; generated files mix invalid UTF-8, BOMs, CR and CRLF line ends and NUL
bytes. Nothing else may come out: no ``yaml`` error, no ``ValueError``, no hang.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import SkillError, Skills

REASONS = {"not_found", "not_a_folder", "unreadable", "too_large", "not_utf8", "not_text",
           "no_front_matter", "yaml_invalid", "yaml_alias", "yaml_tag", "not_a_mapping",
           "missing_name", "invalid_name", "name_mismatch", "missing_description",
           "invalid_description", "no_skill_file"}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes, name: str = "demo") -> Skills | SkillError:
    """Skills read from a folder holding one skill, ``name``, whose file is ``data``."""
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / name).mkdir()
        (Path(root) / name / "SKILL.md").write_bytes(data)
        try:
            return Skills(root)
        except SkillError as exc:
            assert exc.reason in REASONS, exc.reason
            assert exc.code == "skill_invalid" and exc.message and exc.path
            return exc


VALUES = st.one_of(
    st.just("demo"), st.just("A demo skill."), st.text(max_size=40),
    st.integers().map(str), st.just("9" * 5_000), st.just("null"), st.just("~"),
    st.just("[a, b]"), st.just("{a: 1}"), st.just("&anchor demo"), st.just("*anchor"),
    st.just("!!python/object/apply:os.system ['true']"), st.just("!!binary aGVsbG8="),
    st.just("!custom x"), st.just("|\n  block\n  text"), st.just(">\n  folded\n  text"),
    st.just("'quoted: yes'"), st.just('"esc\\x00aped"'), st.just("2024-13-45"),
    st.just("x" * 2_000), st.just("<<: {a: 1}"), st.just("- item"),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(repr),
)
KEYS = st.sampled_from(["name", "description", "license", "metadata", "? complex", "1",
                        "name ", "<<", "- list"])


NAMES = st.one_of(st.just("demo"), st.just("'demo'"), VALUES)
DESCRIPTIONS = st.one_of(st.text(max_size=1_100).map(
    lambda t: json.dumps(t, ensure_ascii=False)), st.just(">\n  Folded\n  text."),
                         VALUES)


@st.composite
def front_matters(draw: st.DrawFn) -> str:
    extra = st.one_of(st.sampled_from(["license", "metadata", "allowed-tools"]), KEYS)
    lines = [f"{key}: {draw(st.one_of(st.just('MIT'), VALUES))}"
             for key in draw(st.lists(extra, unique=True, max_size=2))]
    if draw(st.integers(0, 3)):  # mostly the two fields, so the deeper checks are reached
        lines[0:0] = [f"name: {draw(NAMES)}", f"description: {draw(DESCRIPTIONS)}"]
    if not draw(st.integers(0, 4)):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=30)))
    return "\n".join(lines)


@SETTINGS
@given(front=front_matters(), body=st.text(max_size=200))
def test_generated_front_matter_is_read_or_refused(front: str, body: str) -> None:
    result = outcome(f"---\n{front}\n---\n{body}".encode("utf-8", "surrogatepass"))
    if isinstance(result, Skills):
        skill = result.get("demo")
        assert skill is not None and 0 < len(skill.description) <= 1024
        assert "\n" not in skill.description


@settings(max_examples=100, deadline=None)
@given(name=st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}", fullmatch=True),
       description=st.text(max_size=1_100), body=st.text(max_size=200),
       windows=st.booleans())
def test_generated_well_formed_skills_read_back_exactly(name: str, description: str,
                                                        body: str, windows: bool) -> None:
    quoted = json.dumps(description, ensure_ascii=False)
    text = f"---\nname: '{name}'\ndescription: {quoted}\n---\n{body}"
    if windows:
        text = "\ufeff" + text.replace("\n", "\r\n")
    result = outcome(text.encode("utf-8", "surrogatepass"), name)
    if isinstance(result, SkillError):
        assert result.reason in {"invalid_description", "missing_description",
                                 "yaml_invalid", "not_text", "not_utf8"}, result.message
        return
    skill = result.get(name)
    assert skill is not None and skill.description == " ".join(description.split())
    clean_body = body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    assert skill.body == clean_body
    assert result.catalog() == f"- {name}: {skill.description}"


LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@SETTINGS
@given(prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]), end=LINE_ENDS,
       junk=st.binary(max_size=40), where=st.sampled_from(["front", "body", "none"]))
def test_generated_bytes_are_read_or_refused(prefix: bytes, end: str, junk: bytes,
                                             where: str) -> None:
    front = b"name: demo" + end.encode() + b"description: A demo." + end.encode()
    body = b"Body." + end.encode()
    if where == "front":
        front += junk
    elif where == "body":
        body += junk
    result = outcome(prefix + b"---" + end.encode() + front + b"---" + end.encode() + body)
    if isinstance(result, Skills):
        skill = result.get("demo")
        assert skill is not None and "\r" not in skill.body
        assert prefix != b"\xff\xfe"  # a UTF-16 BOM is not the start of front matter


def reason_of(text: str | bytes) -> str:
    result = outcome(text.encode() if isinstance(text, str) else text)
    assert isinstance(result, SkillError), "accepted"
    return result.reason


def test_a_yaml_bomb_is_refused_before_it_expands() -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        levels.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" +
                      ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(["name: demo", "description: Boom.", *levels])
    assert reason_of(f"---\n{bomb}\n---\nBody") == "yaml_alias"


def test_a_python_object_tag_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = (f"---\nname: demo\ndescription: !!python/object/apply:os.system "
            f"['touch {marker}']\n---\nBody")
    assert reason_of(text) == "yaml_tag"
    assert not marker.exists()


@pytest.mark.parametrize(("front", "reason"), [
    ("name: demo\nname: demo\ndescription: Twice.", "yaml_invalid"),
    ("name: demo\ndescription: One.\ndescription: Two.", "yaml_invalid"),
    ("description: No name.", "missing_name"),
    ("name: demo", "missing_description"),
    ("name: 12\ndescription: A number.", "invalid_name"),
    ("name: [demo]\ndescription: A list.", "invalid_name"),
    ("name: demo\ndescription: {a: 1}", "invalid_description"),
    ("name: demo\ndescription: ''", "missing_description"),
    ("name: demo\ndescription: " + "x" * 1025, "invalid_description"),
    ("name: demo\ndescription: \"bell \\a\"", "invalid_description"),
    ("name: demo\ndescription: \"half \\ud800\"", "yaml_invalid"),
    ("name: " + "9" * 5000 + "\ndescription: Huge.", "yaml_invalid"),
    ("name: demo\ndescription: x\nextra: " + "y" * 17_000, "too_large"),
    ("- name: demo", "not_a_mapping"),
    ("just text", "not_a_mapping"),
    ("", "not_a_mapping"),
    ("name: demo\ndescription: [unclosed", "yaml_invalid"),
    ("? [a]\n: 1\nname: demo\ndescription: Key.", "yaml_invalid"),
    ("name: !!str demo\ndescription: Tagged.", "yaml_tag"),
])
def test_known_hostile_front_matter(front: str, reason: str) -> None:
    assert reason_of(f"---\n{front}\n---\nBody") == reason


@pytest.mark.parametrize(("data", "reason"), [
    (b"---\nname: demo\ndescription: \xff\xfe\n---\n", "not_utf8"),
    (b"---\nname: demo\ndescription: ok\n---\nbody \x00 nul", "not_text"),
    (b"no front matter at all", "no_front_matter"),
    (b"---\nname: demo\ndescription: never closed\n", "no_front_matter"),
    (b"", "no_front_matter"),
])
def test_known_hostile_bytes(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason
