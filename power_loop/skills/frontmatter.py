"""A ``SKILL.md`` file split into its YAML front matter and its markdown body.

The front matter is YAML, read with PyYAML's *safe* loader (an optional dependency: the
``skills`` extra), within limits that keep a hostile file cheap to refuse:

- at most :data:`MAX_FRONT_MATTER_BYTES`, checked before anything is parsed;
- no anchors or aliases (the "billion laughs" shape), no tags of any kind (so no
  ``!!python/object``), no duplicate keys (YAML would silently keep the last one);
- one mapping with string keys; ``name`` and ``description`` are strings.

Text is UTF-8. A leading byte order mark is dropped and CRLF or CR line ends become LF,
so a file saved on Windows is the same skill, byte for byte, as one saved on Linux.
Everything else is refused with a :class:`~power_loop.SkillError` whose ``reason`` says
what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from power_loop.errors import MissingDriverError, SkillError

MAX_FRONT_MATTER_BYTES = 16 * 1024
"""The longest front matter accepted (in UTF-8 bytes)."""

_FENCE = "---"
# C0 controls (but tab and newline), DEL and C1 controls: never in a name or a description.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def decode(raw: bytes, path: str) -> str:
    """``raw`` as text: UTF-8, without a BOM, with LF line ends."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkillError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8",
                         path=path, reason="not_utf8") from exc
    if "\x00" in text:
        raise SkillError(f"{path} contains a NUL character: it is not a text file",
                         path=path, reason="not_text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split(text: str, path: str) -> tuple[str, str]:
    """The front matter (between ``---`` lines at the very top) and the body."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip(" \t") != _FENCE:
        raise SkillError(f"{path} must start with a '---' line opening its YAML front matter "
                         "(name and description)", path=path, reason="no_front_matter")
    for index, line in enumerate(lines[1:], start=1):
        if line.rstrip(" \t") == _FENCE:
            front = "\n".join(lines[1:index])
            body = "\n".join(lines[index + 1:])
            return front, body.strip("\n")
    raise SkillError(f"{path}: the front matter opened by '---' on line 1 is never closed "
                     "by another '---' line", path=path, reason="no_front_matter")


def parse(front: str, path: str) -> dict[str, Any]:
    """The front matter as a mapping, or :class:`SkillError` saying why not."""
    size = len(front.encode("utf-8", "surrogatepass"))
    if size > MAX_FRONT_MATTER_BYTES:
        raise SkillError(f"{path}: the front matter is {size} bytes, over the "
                         f"{MAX_FRONT_MATTER_BYTES} accepted: keep it to a name and a "
                         "short description", path=path, reason="too_large")
    yaml = _yaml()
    loader = _loader(yaml)
    try:
        # The events first: anchors, aliases and tags are refused before any node is built.
        for event in yaml.parse(front, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise SkillError(f"{path}: YAML anchors and aliases are not accepted in "
                                 "front matter", path=path, reason="yaml_alias")
            if getattr(event, "tag", None) is not None:
                raise SkillError(f"{path}: YAML tags ({event.tag}) are not accepted in front "
                                 "matter", path=path, reason="yaml_tag")
        data = yaml.load(front, Loader=loader)  # a SafeLoader subclass
    except SkillError:
        raise
    except Exception as exc:  # the YAML boundary: its errors (and int()'s...) become ours
        raise SkillError(f"{path}: the front matter is not valid YAML: "
                         f"{_one_line(str(exc))}", path=path, reason="yaml_invalid") from exc
    if not isinstance(data, dict):
        raise SkillError(f"{path}: the front matter must be a mapping (name: ..., "
                         f"description: ...), not {type(data).__name__}", path=path,
                         reason="not_a_mapping")
    return data


def text_field(data: Mapping[str, Any], key: str, path: str, *, limit: int) -> str:
    """The string value of ``key``: present, text, no control characters, within ``limit``."""
    if key not in data or data[key] is None:
        raise SkillError(f"{path}: the front matter has no {key!r}", path=path,
                         reason=f"missing_{key}")
    value = data[key]
    if not isinstance(value, str):
        raise SkillError(f"{path}: {key!r} must be text, not {type(value).__name__} (quote "
                         "it)", path=path, reason=f"invalid_{key}")
    value = " ".join(value.split())
    if not value:
        raise SkillError(f"{path}: {key!r} is empty", path=path, reason=f"missing_{key}")
    if len(value) > limit:
        raise SkillError(f"{path}: {key!r} is {len(value)} characters, over the {limit} "
                         "accepted", path=path, reason=f"invalid_{key}")
    if _CONTROL.search(value) or not _encodable(value):
        raise SkillError(f"{path}: {key!r} contains control characters", path=path,
                         reason=f"invalid_{key}")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _yaml() -> Any:
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise MissingDriverError("PyYAML", "skills") from exc
    return yaml


_LOADERS: dict[int, Any] = {}


def _loader(yaml: Any) -> Any:
    """A safe loader that refuses duplicate keys and keeps every scalar plain data."""
    found = _LOADERS.get(id(yaml))
    if found is not None:
        return found
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class _StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"keys must be text, not {type(key).__name__}",
                        key_node.start_mark)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    _LOADERS[id(yaml)] = _StrictLoader
    return _StrictLoader
