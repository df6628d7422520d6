"""The inspector in a real browser (system Chromium): hostile text stays text, and a
session's page follows what the session commits."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import ConsoleMessage, Dialog, Page

from power_loop import LLMRequest, ScriptedLLM, StatefulAgentLoop, Turn, call_tool, reply
from tests.browser_support import artifacts
from tests.durability.harness import ThreadedStoreView
from tests.inspector.harness import inspector
from tests.inspector.scenario import PLAIN, Texts, make, make_loop
from tests.inspector.xss import CLASSIC, PWN

DOCS = Path(__file__).resolve().parents[2] / "docs"

HOSTILE = Texts(
    session_id=f"<img src=x onerror=\"{PWN}\">/'\"&id", metadata=CLASSIC[2],
    question=" ".join(CLASSIC[:5]), argument=CLASSIC[6], tool_name=CLASSIC[3],
    task=CLASSIC[7], child_answer=CLASSIC[8], answer=" ".join(CLASSIC[9:]),
    payee=CLASSIC[1], timer=CLASSIC[5], workflow_input=CLASSIC[13], note=CLASSIC[11],
    summary=CLASSIC[12])


class Watched:
    """What a page did that it must not: dialogs, CSP violations, script errors."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.console: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            self.console.append(message.text)


def _open(page: Page, url: str) -> str:
    page.goto(url)
    page.wait_for_load_state("load")
    assert page.evaluate("() => window.__pwned") is None
    return page.inner_text("body")


@pytest.mark.backends("sqlite")
def test_hostile_text_never_runs_and_is_shown_as_written(view: ThreadedStoreView,
                                                         page: Page) -> None:
    made = view.run(make(view.store, HOSTILE))
    watched = Watched(page)
    with inspector(view.dsn, view.prefix) as running:
        base = running.url
        listing = _open(page, f"{base}/sessions")
        assert HOSTILE.session_id in listing
        shown = _open(page, f"{base}/session?{urlencode({'id': made.session_id})}")
        for text in (HOSTILE.session_id, HOSTILE.question, HOSTILE.payee, HOSTILE.timer,
                     HOSTILE.tool_name, HOSTILE.answer, HOSTILE.note, HOSTILE.summary):
            assert text in shown, text
        for route, query in (("/session/tree", {"id": made.child_id}),
                             ("/session", {"id": made.child_id}),
                             ("/timers", {}), ("/workflows", {}),
                             ("/workflow", {"id": made.workflow_id}),
                             ("/sessions", {"q": HOSTILE.metadata})):
            _open(page, f"{base}{route}?{urlencode(query)}")
        # Clicking through to a session whose id is a payload lands on its page.
        page.goto(f"{base}/sessions")
        page.get_by_role("link", name=HOSTILE.session_id).click()
        page.wait_for_load_state("load")
        assert page.locator("h1").inner_text() == f"Session {HOSTILE.session_id}"
    assert watched.dialogs == []
    assert page.evaluate("() => window.__pwned") is None
    assert [m for m in watched.console if "Content Security Policy" in m
            or "pageerror" in m] == []


@pytest.mark.backends("sqlite")
def test_the_page_follows_the_session_live(view: ThreadedStoreView, page: Page) -> None:
    made = view.run(make(view.store, PLAIN))
    watched = Watched(page)
    with inspector(view.dsn, view.prefix) as running:
        shown = _open(page, f"{running.url}/session?{urlencode({'id': made.session_id})}")
        assert "wired 40 to" not in shown and "waiting" in shown
        page.wait_for_function(
            "() => document.getElementById('live').textContent === 'live'")

        async def approve() -> None:
            async with make_loop(view.store, PLAIN) as loop:
                await loop.approve(made.session_id, made.wait_id)

        view.run(approve())
        page.get_by_text("wired 40 to Pay Bob.").wait_for()
        page.wait_for_function(
            "() => !document.body.innerText.includes('#1 pending')")
        assert int(page.locator("#live").get_attribute("data-updates") or 0) >= 1
        sends = view.run(view.store.list_sends(made.session_id))
        assert [s.status for s in sends] == ["done", "done"]
        page.set_viewport_size({"width": 1200, "height": 1100})
        # Kept as a CI artifact; POWER_LOOP_UPDATE_SCREENSHOTS=1 refreshes the docs' copy.
        shot = artifacts() / "inspector.png"
        page.screenshot(path=str(shot), full_page=False)
        if os.environ.get("POWER_LOOP_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, DOCS / "inspector.png")
    assert watched.dialogs == [] and watched.console == []


def _printable(c: str) -> bool:
    # Control characters are left out: HTML turns CR into LF, and NUL into U+FFFD.
    return c in "\n\t" or (c >= " " and not "\x7f" <= c <= "\x9f")


FRAGMENTS = ("<script>", "</script>", "<img src=x onerror=", PWN, "alert(1)", "javascript:",
             '"', "'", ">", "<", "&amp;", "&lt;", "</pre>", "</td>", "<!--", "]]>", "\u202e",
             "{{", "`", "<svg/onload=", "\u2028", "\n", " on", "=")
hostile_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS),
                                  st.text(st.characters(codec="utf-8").filter(_printable),
                                          max_size=8)),
                        min_size=1, max_size=8).map("".join)


class _Echo:
    """A model that calls a tool named by the text, with the text, then says the text."""

    def __init__(self) -> None:
        self.text = ""

    def __call__(self, request: LLMRequest) -> Turn:
        if request.messages[-1].role == "user":
            return call_tool(self.text, {"a": self.text})
        return reply(self.text)


@pytest.mark.backends("sqlite")
def test_generated_hostile_text_is_shown_literally(view: ThreadedStoreView, page: Page) -> None:
    echo = _Echo()
    watched = Watched(page)
    count = itertools.count()
    with inspector(view.dsn, view.prefix) as running:

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(text=hostile_text)
        def check(text: str) -> None:
            sid = f"g{next(count)}-{text[:150]}"
            echo.text = text

            async def store_it() -> None:
                async with StatefulAgentLoop(llm=ScriptedLLM(echo), store=view.store) as loop:
                    await loop.new_session(session_id=sid, metadata={"m": text})
                    await loop.send(text, sid)

            view.run(store_it())
            page.goto(f"{running.url}/session?{urlencode({'id': sid})}")
            assert page.evaluate("() => window.__pwned") is None
            assert page.locator("h1").text_content() == f"Session {sid}"
            assert page.locator("pre.text").first.text_content() == text
            assert page.locator("pre.text").last.text_content() == text
            assert page.locator(".call code").first.text_content() == text
            call = page.locator(".call pre").first.text_content() or ""
            assert json.loads(call) == {"a": text}
            assert page.locator(".result code").first.text_content() == text

        check()
    assert watched.dialogs == [] and watched.console == []
