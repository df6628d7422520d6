"""The escaping HTML builder: stored text never becomes markup."""

from __future__ import annotations

import html

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from power_loop.inspector.markup import Markup, el, escape, path
from tests.inspector.xss import CLASSIC, check_page

_TRICKY = "<>\"'&=/ `\\;:jscript\u202e\u0000\uff53"
hostile = st.one_of(st.sampled_from(CLASSIC), st.text(max_size=80),
                    st.text(st.sampled_from(_TRICKY), max_size=40))


@settings(max_examples=100, deadline=None)
@given(text=hostile, attribute=hostile)
@example(text="\nleading newline", attribute="")
def test_text_and_attribute_values_stay_text(text: str, attribute: str) -> None:
    document = el("div", el("span", text, title=attribute), el("pre", [text, None, [text]]),
                  data_x=attribute)
    shown = check_page(document)
    # The text comes back exactly, three times. (html.parser keeps the newline a browser
    # drops right after <pre>: the one el() adds when the text starts with a newline.)
    pre = text * 2
    assert shown == text + ("\n" + pre if pre.startswith("\n") else pre)
    for name, value in (("title", attribute), ("data-x", attribute)):
        assert f' {name}="{html.escape(value, quote=True)}"' in document


@settings(max_examples=100, deadline=None)
@given(segment=hostile, value=hostile)
def test_links_stay_on_the_site(segment: str, value: str) -> None:
    link = path("session", segment or "x", query={"id": value})
    assert link.startswith("/session/") and "//" not in link.split("?")[0][1:]
    check_page(el("a", "x", href=link))


def test_only_the_inspectors_own_names_are_written() -> None:
    with pytest.raises(ValueError):
        el("a", "x", onclick="alert(1)")
    with pytest.raises(ValueError):
        el("a", "x", href="javascript:alert(1)")
    with pytest.raises(ValueError):
        el("a", "x", href="//evil.example/")
    with pytest.raises(ValueError):
        el("scr ipt")
    assert escape(Markup("<b>")) == "<b>" and escape("<b>") == "&lt;b&gt;"
