"""A tiny HTML builder that escapes everything it is not told is markup.

Everything the inspector shows was written by a model, a tool or an application, so
every string is hostile until proven otherwise. :func:`el` escapes text children and
attribute values; only a :class:`Markup` (made by :func:`el` itself, or by
:func:`raw` for the few constant fragments of the inspector's own) passes through.
Attribute names and tags are the inspector's own, checked against a closed pattern, and
links are built by :func:`path`, which percent-encodes every segment, so no stored text
can become a ``javascript:`` URL, an event handler or a new element.

Links start with where the inspector is mounted (:data:`ROOT`), so its pages work at
the root of a host and under a prefix alike.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from contextvars import ContextVar
from urllib.parse import quote, urlencode

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})
_URL_ATTRIBUTES = frozenset({"href", "src", "action"})

ROOT: ContextVar[str] = ContextVar("power_loop_inspector_root", default="")
"""The prefix the inspector is mounted under (``""`` at the root of a host), as
:func:`mount_root` makes it from the request's ASGI ``root_path`` (a Starlette
``Mount``, a server's ``--root-path`` behind a proxy). Set for each request by the
guard: pages are built deep in helpers that never see the request."""


class Markup(str):
    """A string that is already HTML: :func:`el` inserts it as it stands."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as text inside HTML (also safe inside a quoted attribute value)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def raw(text: str) -> Markup:
    """A constant fragment of the inspector's own (never stored data)."""
    return Markup(text)


def _children(items: Iterable[object]) -> str:
    out: list[str] = []
    for item in items:
        if item is None or item is False:
            continue
        if isinstance(item, str | int | float):
            out.append(escape(item))
        else:
            out.append(_children(item))  # type: ignore[arg-type]
    return "".join(out)


def el(tag: str, *children: object, **attrs: str | int | bool | None) -> Markup:
    """An element: ``el("a", "text", href=path("session", query={"id": sid}), class_="x")``.

    A trailing underscore is dropped from an attribute name (``class_``), other
    underscores become dashes (``data_cursor`` is ``data-cursor``). ``True`` writes a
    bare attribute, ``None`` and ``False`` leave it out.

    Raises:
        ValueError: a tag or attribute name outside the inspector's own, or a URL
            attribute that is not a path of this site (a bug, never stored data).
    """
    if not _NAME.match(tag):
        raise ValueError(f"not a tag name: {tag!r}")
    parts = [f"<{tag}"]
    for key, value in attrs.items():
        name = key.rstrip("_").replace("_", "-")
        if not _NAME.match(name) or name.startswith("on"):
            raise ValueError(f"not an attribute the inspector writes: {name!r}")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {name}")
            continue
        text = str(value)
        if name in _URL_ATTRIBUTES and (not text.startswith("/") or text.startswith("//")):
            raise ValueError(f"{name} must be a path of this site, not {text[:40]!r}")
        parts.append(f' {name}="{escape(text)}"')
    parts.append(">")
    if tag in _VOID:
        return Markup("".join(parts))
    inner = _children(children)
    if tag == "pre" and inner.startswith("\n"):
        inner = "\n" + inner  # the parser drops one newline right after <pre>
    return Markup("".join(parts) + inner + f"</{tag}>")


def mount_root(root_path: str) -> str:
    """A request's ``root_path`` as the start of links: ``""`` or ``/a/b``, each
    segment percent-encoded (so it can only ever be a path of this site)."""
    return "".join("/" + quote(s, safe="") for s in root_path.split("/") if s)


def path(*segments: str | int, query: dict[str, str] | None = None) -> str:
    """A link within the inspector, under its mount (:data:`ROOT`): each segment
    percent-encoded (``/`` included)."""
    url = ROOT.get() + "/" + "/".join(quote(str(s), safe="") for s in segments)
    pairs = {k: v for k, v in (query or {}).items() if v}
    return f"{url}?{urlencode(pairs)}" if pairs else url
