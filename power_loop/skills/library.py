"""``Skills``: a folder of ``SKILL.md`` skills, read once, offered to the model as two tools.

The whole folder is read and checked when :class:`Skills` is built: a bad skill fails
there (a :class:`~power_loop.SkillError`), never in the middle of a send. What was read
is a snapshot: the catalog, and the body ``load_skill`` returns, stay the same for the
life of the object, so every request this process builds is the same, and a process
that reads the same folder builds the same bytes. Resource files are read when the
model asks for one (they can be large, and they are not part of any request until then).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from power_loop.errors import InvalidArgumentError, SkillError
from power_loop.skills.files import listing
from power_loop.skills.frontmatter import decode, parse, split, text_field
from power_loop.tools.tool import Tool

SKILL_FILE = "SKILL.md"
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1024
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")


@dataclass(frozen=True)
class Skill:
    """One skill, as read from its folder.

    Attributes:
        name: The skill's name (its folder's name: lowercase letters, digits and
            hyphens, up to 64 characters).
        description: What it is for and when to use it, as the model sees it in the
            catalog (whitespace runs collapsed to one space).
        body: The markdown after the front matter: what ``load_skill`` returns.
        folder: The skill's folder (a real path: symlinks resolved).
        files: The other files of the folder, relative, sorted (hidden ones left out).
    """

    name: str
    description: str
    body: str
    folder: Path
    files: tuple[str, ...]


class Skills:
    """A skills folder: one sub-folder per skill, each with a ``SKILL.md``.

    Only names and descriptions reach the prompt (in the ``load_skill`` tool's
    description, sorted by name); the model loads a skill's instructions when a task
    calls for them, and reads its files with ``read_skill_file``. Build it once (at
    start-up) and hand its tools to every loop.

    Args:
        path: The skills folder.
        max_skill_bytes: The longest ``SKILL.md`` accepted.
        max_file_bytes: The longest resource file ``read_skill_file`` returns.

    Raises:
        SkillError: the folder, or one of its skills, cannot be accepted (``.reason``
            says why).

    Example::

        skills = Skills("./skills")
        loop = StatefulAgentLoop(llm=llm, dsn="app.db", tools=[*skills.tools(), add])
    """

    def __init__(self, path: str | os.PathLike[str], *, max_skill_bytes: int = 100_000,
                 max_file_bytes: int = 100_000) -> None:
        for name, value in (("max_skill_bytes", max_skill_bytes),
                            ("max_file_bytes", max_file_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or not \
                    1_000 <= value <= 10_000_000:
                raise InvalidArgumentError(f"Skills: {name} must be an int from 1000 to "
                                           f"10000000, not {value!r}")
        self.max_skill_bytes = max_skill_bytes
        self.max_file_bytes = max_file_bytes
        root = Path(path)
        self.path = root
        self._skills = {s.name: s for s in _read_folder(root, max_skill_bytes)}
        self._tools: tuple[Tool, ...] | None = None

    def __repr__(self) -> str:
        return f"Skills({str(self.path)!r}, {len(self._skills)} skills)"

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def get(self, name: str) -> Skill | None:
        """The skill named ``name``, if there is one."""
        return self._skills.get(name)

    def catalog(self) -> str:
        """The skills as the model sees them: one ``- name: description`` line each."""
        if not self._skills:
            return "(none)"
        return "\n".join(f"- {s.name}: {s.description}" for s in self._skills.values())

    def tools(self) -> tuple[Tool, ...]:
        """``load_skill`` and ``read_skill_file``: both read-only, safe to repeat."""
        if self._tools is None:
            from power_loop.skills.tools import skill_tools

            self._tools = skill_tools(self)
        return self._tools


def _read_folder(root: Path, max_bytes: int) -> list[Skill]:
    shown = str(root)
    try:
        if not root.exists():
            raise SkillError(f"the skills folder {shown!r} does not exist", path=shown,
                             reason="not_found")
        if not root.is_dir():
            raise SkillError(f"the skills folder {shown!r} is a file, not a folder",
                             path=shown, reason="not_a_folder")
        real = root.resolve(strict=True)
        if (real / SKILL_FILE).exists():
            raise SkillError(f"{shown!r} is one skill (it holds a {SKILL_FILE}): pass the "
                             "folder holding the skills' folders", path=shown,
                             reason="not_a_folder")
        entries = sorted(e for e in os.listdir(real) if not e.startswith("."))
    except OSError as exc:
        raise SkillError(f"the skills folder {shown!r} cannot be read: {exc}", path=shown,
                         reason="unreadable") from exc
    return [_read_skill(real / entry, root / entry, max_bytes) for entry in entries
            if (real / entry).is_dir()]


def _read_skill(folder: Path, given: Path, max_bytes: int) -> Skill:
    """The skill in ``folder`` (``given`` is how errors name it: as the caller wrote it)."""
    shown = str(given / SKILL_FILE)
    try:
        real = folder.resolve(strict=True)
        raw = _read_regular(real / SKILL_FILE, max_bytes + 1)
    except FileNotFoundError as exc:
        raise SkillError(f"the skill folder {str(given)!r} has no {SKILL_FILE}: add one, or "
                         "move the folder out of the skills folder", path=shown,
                         reason="no_skill_file") from exc
    except IsADirectoryError as exc:
        raise SkillError(f"{shown} is not a regular file", path=shown,
                         reason="no_skill_file") from exc
    except OSError as exc:
        raise SkillError(f"{shown} cannot be read: {exc.strerror or exc}", path=shown,
                         reason="unreadable") from exc
    if len(raw) > max_bytes:
        raise SkillError(f"{shown} is over {max_bytes} bytes: move long material into files "
                         "beside it (the model reads them with read_skill_file)", path=shown,
                         reason="too_large")
    front, body = split(decode(raw, shown), shown)
    data = parse(front, shown)
    name = text_field(data, "name", shown, limit=MAX_NAME_CHARS)
    if not _NAME.match(name):
        raise SkillError(f"{shown}: the name {name!r} must be lowercase letters, digits and "
                         "single hyphens", path=shown, reason="invalid_name")
    if name != folder.name:
        raise SkillError(f"{shown}: the name {name!r} must be its folder's name "
                         f"({folder.name!r})", path=shown, reason="name_mismatch")
    description = text_field(data, "description", shown, limit=MAX_DESCRIPTION_CHARS)
    return Skill(name, description, body, real, listing(real))


def _read_regular(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of the regular file at ``path`` (a FIFO or a device is
    refused, not waited on)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)
