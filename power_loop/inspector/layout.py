"""The frame of every page, and the small pieces the pages share."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from power_loop.cli.formatting import when
from power_loop.inspector.markup import Markup, el, path
from power_loop.llm.messages import Usage

_NAV = (("Sessions", "sessions"), ("Timers & parked", "timers"), ("Workflows", "workflows"))


def page(title: str, *body: object, backend: str, live: bool = False) -> Markup:
    """A whole HTML document: the stylesheet and the one script are files of this site."""
    nav = el("nav", el("strong", "power_loop inspector"),
             [el("a", label, href=path(target)) for label, target in _NAV],
             el("span", f"{backend} · read-only", class_="muted"))
    head = el("head", el("meta", charset="utf-8"), el("title", f"{title} · power_loop"),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("link", rel="stylesheet", href=path("static", "inspector.css")),
              el("script", src=path("static", "inspector.js"), defer=True) if live else None)
    document = el("html", head, el("body", nav, el("main", el("h1", title), *body)), lang="en")
    return Markup("<!doctype html>\n" + document)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
          empty: str = "none") -> Markup:
    """A table, or a line saying there is nothing."""
    body = [el("tr", [el("td", cell) for cell in row]) for row in rows]
    if not body:
        return el("p", empty, class_="muted")
    return el("table", el("thead", el("tr", [el("th", h) for h in headers])), el("tbody", body))


def pairs(rows: Iterable[tuple[str, object]]) -> Markup:
    """A two-column table of names and values."""
    return el("table", el("tbody", [el("tr", el("th", k), el("td", v)) for k, v in rows]),
              class_="pairs")


def at(value: Any) -> str:
    return when(value) if value is not None else "-"


def as_json(value: Any) -> Markup:
    """A JSON value, indented, in a ``pre`` (escaped like any text)."""
    try:
        text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return el("pre", text)


def json_text(text: str) -> Markup:
    """Arguments as the model wrote them: indented when they are JSON, else as they stand."""
    try:
        return as_json(json.loads(text))
    except ValueError:
        return el("pre", text)


def tokens(usage: Usage) -> str:
    return (f"{usage.input_tokens:,} in, {usage.output_tokens:,} out, "
            f"{usage.cache_read_tokens:,} cache read, {usage.cache_write_tokens:,} cache write")


def session_link(session_id: str) -> Markup:
    return el("a", session_id, href=path("session", query={"id": session_id}))


def badge(text: str) -> Markup:
    return el("span", text, class_=f"badge {text if text.isalpha() else ''}".strip())
