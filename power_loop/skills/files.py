"""Reading a file of a skill's folder for the model, and never one outside it.

The path comes from the model, so it is treated as hostile: it must be relative, in
``/``-separated form, without ``..``, hidden names, backslashes, NUL or other control
characters, and it must resolve (symlinks followed) to a regular file inside the skill's
folder. Whatever is refused becomes a :class:`~power_loop.ToolError` the model reads.

The folder is checked when the path is resolved, then the file is opened without
following a symlink in its last component: a file swapped for a link between the two is
refused. (A folder swapped for a link between the two steps is not: power_loop guards
against what the model asks, not against a local user rewriting the skills folder.)
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from power_loop.errors import ToolError

MAX_LISTED_FILES = 200
"""A skill's files named in what ``load_skill`` returns, at most."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"[A-Za-z]:")


def confined(folder: Path, requested: object) -> Path:
    """The real path of ``requested`` inside ``folder`` (itself a real path)."""
    if not isinstance(requested, str) or not requested.strip():
        raise ToolError("Error: give the file's path inside the skill's folder, e.g. "
                        "'reference.md'.")
    shown = repr(requested[:200])
    try:
        requested.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(f"Error: the path {shown} is not valid Unicode.") from None
    if _CONTROL.search(requested):
        raise ToolError(f"Error: the path {shown} contains control characters.")
    if "\\" in requested:
        raise ToolError(f"Error: the path {shown} contains '\\': separate folders with '/'.")
    relative = PurePosixPath(requested)
    if relative.is_absolute() or _DRIVE.match(requested):
        raise ToolError(f"Error: the path {shown} is absolute: give it relative to the "
                        "skill's folder, e.g. 'reference.md'.")
    parts = [p for p in relative.parts if p != "."]
    if ".." in parts:
        raise ToolError(f"Error: the path {shown} leaves the skill's folder ('..'): only "
                        "files inside it can be read.")
    if any(p.startswith(".") for p in parts):
        raise ToolError(f"Error: the path {shown} names a hidden file or folder; those are "
                        "not readable.")
    if not parts:
        raise ToolError(f"Error: the path {shown} is the skill's folder itself: name a file "
                        "in it.")
    try:
        real = folder.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long...
        raise ToolError(f"Error: the path {shown} cannot be resolved.") from None
    if not real.is_relative_to(folder):
        raise ToolError(f"Error: the path {shown} leads outside the skill's folder (through "
                        "a symbolic link): only files inside it can be read.")
    return real


def read_text(path: Path, shown: str, *, max_bytes: int) -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``max_bytes`` long."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ToolError(f"Error: the skill has no file {shown}. Its files are listed in "
                        "what load_skill returned.") from None
    except OSError as exc:
        raise ToolError(f"Error: the file {shown} cannot be opened "
                        f"({exc.strerror or type(exc).__name__}).") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"Error: {shown} is a folder: name a file in it.")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"Error: {shown} is not a regular file.")
        if info.st_size > max_bytes:
            raise ToolError(f"Error: the file {shown} is {info.st_size} bytes, over the "
                            f"{max_bytes} that can be read.")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ToolError(f"Error: the file {shown} cannot be read "
                        f"({exc.strerror or type(exc).__name__}).") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:  # it grew after fstat
        raise ToolError(f"Error: the file {shown} is over the {max_bytes} bytes that can be "
                        "read.")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"Error: the file {shown} is not UTF-8 text; only text files can be "
                        "read.") from None
    if "\x00" in text:
        raise ToolError(f"Error: the file {shown} is binary; only text files can be read.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def listing(folder: Path) -> tuple[str, ...]:
    """The skill's files (besides ``SKILL.md``), sorted; hidden ones and links leading
    out of the folder left out."""
    found: list[str] = []
    for current, folders, files in os.walk(folder):  # symlinked folders are not entered
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        base = Path(current).relative_to(folder)
        for name in sorted(files):
            relative = (base / name).as_posix()
            if name.startswith(".") or relative == "SKILL.md":
                continue
            try:  # a link leading out is not the skill's file: readable, it would not be
                if not (folder / relative).resolve().is_relative_to(folder):
                    continue
            except (OSError, RuntimeError):
                continue
            found.append(relative)
    return tuple(sorted(found))
