"""Hostile text: classic XSS payloads, and a parser that proves a page holds none of it
as markup."""

from __future__ import annotations

from html.parser import HTMLParser

PWN = "window.__pwned=1"
CLASSIC = (
    f"<script>{PWN}</script>",
    f"<img src=x onerror=\"{PWN}\">",
    f"\"><svg onload={PWN}>",
    "'><body onload=alert(1)>",
    f"javascript:{PWN}",
    "<a href=\"javascript:alert(1)\">click</a>",
    f"</pre></td></tr></table><script>{PWN}</script>",
    f"<iframe srcdoc=\"<script>parent.{PWN.removeprefix('window.')}</script>\"></iframe>",
    f"<math><mtext><table><mglyph><style><img src=x onerror={PWN}>",
    f"\u202e<script>{PWN}</script>\u2066",
    f"\uff1cscript\uff1e{PWN}\uff1c/script\uff1e",
    f"&lt;script&gt;{PWN}&lt;/script&gt;",
    "{{constructor.constructor('alert(1)')()}}",
    f"<details open ontoggle={PWN}>",
    "<style>@import 'http://x';</style><link rel=import href=//x>",
)
"""Each would set ``window.__pwned`` or open a dialog if it ran."""

ALLOWED_TAGS = frozenset({
    "html", "head", "meta", "title", "link", "script", "body", "nav", "strong", "a", "span",
    "main", "h1", "h2", "p", "form", "input", "select", "option", "button", "label",
    "table", "thead", "tbody", "tr", "th", "td", "pre", "code", "div", "ol", "ul", "li",
    "details", "summary"})


class PageParts(HTMLParser):
    """The tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_page(document: str) -> str:
    """Assert the page is made of the inspector's own markup only; return its text."""
    parts = PageParts()
    parts.feed(document)
    parts.close()
    for tag, attrs in parts.tags:
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            if name in {"href", "src", "action"}:
                assert value and value.startswith("/") and not value.startswith("//"), value
            if tag == "script":
                assert (name, value) in {("src", "/static/inspector.js"), ("defer", None)}
    return "".join(parts.text)
