"""The example in a real browser, as a person uses it (SQLite only: the HTTP layer is
tested on every backend in test_http.py).

One web server and one worker for the module. The last test SIGKILLs the web server
mid-send and starts it again: the page reconnects by itself, and the worker finishes the
send the dead process left.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser_support import artifacts
from tests.durability.harness import Snapshot, wait_until
from tests.web.conftest import Site

pytestmark = [pytest.mark.backends("sqlite"), pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs"
expect.set_options(timeout=20_000)  # a shared, loaded machine: conditions, not timings

HOSTILE = ("hello <img src=x onerror=\"document.title='pwned'\">"
           "<script>document.title='pwned'</script> & bye")


@pytest.fixture(scope="module")
def site_options() -> list[str]:
    # A research call long enough to kill the server in; a short lease for the takeover.
    return ["--research-seconds", "3", "--lease-ttl", "2", "--poll", "0.2",
            "--heartbeat", "1"]


def open_page(page: Page, site: Site) -> str:
    page.goto(site.url + "/")
    expect(page.locator("#status")).to_have_text("live")
    session_id = page.locator("#session-id").text_content()
    assert session_id and session_id != "…"
    return session_id


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send")


def shown(page: Page) -> list[dict[str, Any]]:
    """The transcript's messages as the page shows them."""
    rows: list[dict[str, Any]] = page.locator("#transcript .msg").evaluate_all(
        "els => els.map(e => ({seq: Number(e.dataset.seq), send: Number(e.dataset.sendIndex),"
        " role: e.querySelector('.role').textContent,"
        " texts: [...e.querySelectorAll('.text')].map(t => t.textContent),"
        " calls: [...e.querySelectorAll('.tool-call')].map(t => t.dataset.callId),"
        " results: [...e.querySelectorAll('.tool-result')].map(t => t.dataset.callId)}))")
    return rows


def sends_shown(page: Page) -> list[tuple[int, str]]:
    rows: list[list[Any]] = page.locator("#transcript .send").evaluate_all(
        "els => els.map(e => [Number(e.dataset.sendIndex), e.dataset.status])")
    return [(int(i), str(s)) for i, s in rows]


def assert_page_matches_store(page: Page, stored: Snapshot) -> None:
    """Every stored message shown once, in order, as stored; every send's start and end."""
    expected = []
    for m in stored.messages:
        parts = m.body["parts"]
        expected.append({
            "seq": m.seq, "send": m.send_index, "role": m.role,
            "texts": [p["text"] for p in parts if p["kind"] == "text"],
            "calls": [p["id"] for p in parts if p["kind"] == "tool_call"],
            "results": [p["call_id"] for p in parts if p["kind"] == "tool_result"]})
    assert shown(page) == expected
    ends = [(s.send_index, s.status) for s in stored.sends if s.status != "pending"]
    starts = [(s.send_index, "pending") for s in stored.sends]
    assert sorted(sends_shown(page)) == sorted(starts + ends)


def test_chat_streams_and_shows_text_as_text(page: Page, site: Site) -> None:
    sid = open_page(page, site)
    say(page, HOSTILE)
    answers = page.locator("#transcript .msg.assistant .text")
    expect(answers.last).to_contain_text("You said: hello <img")
    assert page.locator("#transcript .msg.user .text").last.text_content() == HOSTILE
    assert page.locator("#transcript img, #transcript script").count() == 0
    assert page.title() == "power_loop web example"

    say(page, "research tides")  # a three-second tool: its live events show meanwhile
    expect(page.locator("#draft .activity")).to_contain_text("running research(")
    expect(page.locator("#transcript .msg.assistant .text").last).to_contain_text(
        "Done: 3 notes about research tides")
    expect(page.locator("#draft")).to_be_hidden()
    assert_page_matches_store(page, site.view.snapshot(sid))


def test_click_approve(page: Page, site: Site) -> None:
    sid = open_page(page, site)
    say(page, "hello")
    expect(page.locator("#transcript .msg.assistant")).to_have_count(1)
    say(page, "pay Bob 40")
    approve = page.locator("button.approve")
    expect(approve).to_be_visible()
    expect(page.locator("#waits .tool")).to_have_text('wire_money({"to": "Bob", "amount": 40})')
    shot = artifacts() / "web-example.png"
    page.screenshot(path=str(shot))
    if os.environ.get("POWER_LOOP_UPDATE_SCREENSHOTS"):  # refreshes the one in docs/
        shutil.copyfile(shot, DOCS / "web-example.png")

    approve.click()
    answers = page.locator("#transcript .msg.assistant .text")
    expect(answers.last).to_have_text("Done: wired 40 EUR to Bob")
    expect(page.locator("#waiting")).to_be_hidden()
    stored = site.view.snapshot(sid)
    assert [s.status for s in stored.sends] == ["done", "done"]
    assert_page_matches_store(page, stored)


def test_answer_a_question(page: Page, site: Site) -> None:
    sid = open_page(page, site)
    say(page, "ask me")
    expect(page.locator("#waits .question")).to_have_text("Which city should I book?")
    page.fill("#waits .answer-text", "Paris <b>centre</b>")
    page.click("#waits button.answer")
    answers = page.locator("#transcript .msg.assistant .text")
    expect(answers.last).to_have_text("Thanks, noted: Paris <b>centre</b>")
    expect(page.locator("#waiting")).to_be_hidden()
    assert_page_matches_store(page, site.view.snapshot(sid))


def test_the_page_catches_up_after_the_web_server_is_killed_mid_send(
        page: Page, site: Site) -> None:
    sid = open_page(page, site)
    say(page, "hello")
    expect(page.locator("#transcript .msg.assistant")).to_have_count(1)
    say(page, "research durability")
    # The model's call is committed (the feed shows it): the tool now runs, for seconds.
    expect(page.locator("#transcript .msg.assistant .tool-call")).to_have_count(1)
    site.web.kill()
    stored = site.view.snapshot(sid)
    assert stored.sends[-1].status == "pending", "the send ended before the kill"
    assert not any(m.role == "tool" for m in stored.messages), "the tool ended before the kill"
    expect(page.locator("#status")).to_have_text("reconnecting")

    site.web.start()  # same port: the page's EventSource finds it again
    wait_until(lambda: site.view.snapshot(sid).sends[-1].status == "done",
               "the worker to finish the send")
    expect(page.locator(".send[data-send-index='1'][data-status='done']")).to_have_count(1)
    expect(page.locator("#status")).to_have_text("live")
    stored = site.view.snapshot(sid)
    stored.check_consistent()
    assert [m.role for m in stored.of_send(1)] == ["user", "assistant", "tool", "assistant"]
    assert_page_matches_store(page, stored)
    assert page.locator("#transcript .msg.assistant .text").last.text_content() == (
        "Done: 3 notes about research durability: it is well documented, widely used, "
        "and durable.")
