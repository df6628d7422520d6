"""The example's HTTP layer, through httpx, against the real uvicorn process.

One web server and one worker per backend for the whole module (``site``); every test
makes sessions of its own. What the server says is checked against the store.
"""

from __future__ import annotations

import importlib
import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.durability.harness import WAIT, StoreView, wait_until
from tests.web.conftest import Site
from tests.web.support import Frame, Process, finished, frames_of, live, parse_frames


@pytest.fixture(scope="module")
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=60) as opened:
        yield opened


def new_session(client: httpx.Client) -> str:
    response = client.post("/api/sessions")
    assert response.status_code == 201
    session_id: str = response.json()["session_id"]
    return session_id


def send(client: httpx.Client, session_id: str, text: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/sessions/{session_id}/messages", json={"text": text, **body})


def feed(client: httpx.Client, session_id: str, after: str | None = None,
         headers: dict[str, str] | None = None) -> list[Frame]:
    params = {"follow": "0", **({"after": after} if after is not None else {})}
    response = client.get(f"/api/sessions/{session_id}/feed", params=params,
                          headers=headers or {})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = frames_of(response)
    assert frames[-1].event == "end"
    return frames[:-1]


def test_the_page_and_its_files_forbid_inline_script(client: httpx.Client) -> None:
    for path, kind in (("/", "text/html"), ("/static/app.js", "javascript"),
                       ("/static/style.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"]
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert "<script src=\"/static/app.js\"" in page
    assert "<script>" not in page and " on" not in page.replace(" one", "")
    assert "innerHTML" not in client.get("/static/app.js").text


def test_a_send_streams_typed_events_and_the_feed_has_what_it_stored(
        client: httpx.Client, site: Site) -> None:
    sid = new_session(client)
    response = send(client, sid, "hello there")
    assert response.status_code == 200
    assert response.headers["x-accel-buffering"] == "no"
    frames = frames_of(response)
    events = live(frames)
    assert events[0]["type"] == "SendStarted" and frames[-1].event == "end"
    text = "".join(e["text"] for e in events if e["type"] == "TextChunk")
    done = finished(frames)
    assert done["status"] == "done" and text == done["final_text"]
    assert len([e for e in events if e["type"] == "TextChunk"]) > 1  # it streamed
    assert all("traceback" not in e for e in events)

    items = feed(client, sid)
    stored = site.view.snapshot(sid)
    assert [(f.event, f.data.get("seq")) for f in items] == [
        ("send", None), ("message", 0), ("message", 1), ("send", None)]
    assert [f.data["seq"] for f in items if f.event == "message"] == [
        m.seq for m in stored.messages]
    assert items[1].data["parts"] == stored.messages[0].body["parts"]
    assert items[2].data["parts"][0]["text"] == done["final_text"]
    assert [f.data["status"] for f in items if f.event == "send"] == ["pending", "done"]
    assert all(f.id == f.data["cursor"] for f in items)


def test_the_feed_resumes_from_a_cursor_or_last_event_id(client: httpx.Client) -> None:
    sid = new_session(client)
    send(client, sid, "one")
    send(client, sid, "two")
    everything = feed(client, sid)
    assert len(everything) == 8
    for cut in range(len(everything)):
        cursor = everything[cut].id
        assert cursor is not None
        assert feed(client, sid, after=cursor) == everything[cut + 1:]
    # A reconnecting EventSource sends the last id it saw; it wins over ?after=.
    tail = feed(client, sid, after=everything[0].id,
                headers={"Last-Event-ID": str(everything[5].id)})
    assert tail == everything[6:]


def test_a_following_feed_delivers_a_send_made_meanwhile(client: httpx.Client) -> None:
    sid = new_session(client)
    send(client, sid, "before")
    cursor = feed(client, sid)[-1].id
    assert cursor is not None
    with client.stream("GET", f"/api/sessions/{sid}/feed", params={"after": cursor}) as stream:
        done = finished(frames_of(send(client, sid, "meanwhile")))
        lines: list[str] = []
        for line in stream.iter_lines():
            lines.append(line)
            frames = parse_frames(lines)
            if frames and frames[-1].event == "send" and frames[-1].data["status"] != "pending":
                break
    assert [f.event for f in frames] == ["send", "message", "message", "send"]
    assert frames[1].data["parts"] == [{"kind": "text", "text": "meanwhile"}]
    assert frames[2].data["parts"][0]["text"] == done["final_text"]
    assert frames[-1].data["send_index"] == 1


def test_the_worker_fires_the_wakeup_the_agent_scheduled(client: httpx.Client,
                                                          site: Site) -> None:
    sid = new_session(client)
    done = finished(frames_of(send(client, sid, "remind me")))
    assert done["final_text"] == "I will get back to you in a few seconds."
    cursor = feed(client, sid)[-1].id
    assert cursor is not None
    with client.stream("GET", f"/api/sessions/{sid}/feed", params={"after": cursor}) as stream:
        lines: list[str] = []
        for line in stream.iter_lines():  # the worker's send, as the page sees it
            lines.append(line)
            frames = parse_frames(lines)
            if frames and frames[-1].event == "send" and frames[-1].data["status"] != "pending":
                break
    assert [f.event for f in frames] == ["send", "message", "message", "send"]
    assert frames[0].data["source"] == "timer"
    assert frames[2].data["parts"] == [{"kind": "text", "text": "Reminder: Time to stretch!"}]
    stored = site.view.snapshot(sid)
    assert [(s.source, s.status) for s in stored.sends] == [("user", "done"), ("timer", "done")]


def test_approve_reject_and_answer_continue_the_send(client: httpx.Client, site: Site) -> None:
    sid = new_session(client)
    waiting = finished(frames_of(send(client, sid, "pay Alice 25")))
    assert (waiting["status"], waiting["stop_reason"]) == ("waiting", "awaiting_approval")
    (wait,) = waiting["waiting"]
    assert (wait["tool_name"], json.loads(wait["arguments"])) == (
        "wire_money", {"to": "Alice", "amount": 25})
    assert client.get(f"/api/sessions/{sid}").json()["waiting"] == [wait]
    refused = send(client, sid, "anything else?")
    assert (refused.status_code, refused.json()["code"]) == (409, "session_waiting")

    approved = client.post(f"/api/sessions/{sid}/waits/{wait['wait_id']}/approve", json={})
    done = finished(frames_of(approved))
    assert (done["status"], done["final_text"]) == ("done", "Done: wired 25 EUR to Alice")
    again = client.post(f"/api/sessions/{sid}/waits/{wait['wait_id']}/approve", json={})
    assert (again.status_code, again.json()["code"]) == (409, "wait_already_decided")
    assert client.get(f"/api/sessions/{sid}").json()["waiting"] == []

    (wait,) = finished(frames_of(send(client, sid, "pay Bob 7")))["waiting"]
    rejected = client.post(f"/api/sessions/{sid}/waits/{wait['wait_id']}/reject",
                           json={"reason": "Not this month."})
    assert "Not this month." in finished(frames_of(rejected))["final_text"]

    (question,) = finished(frames_of(send(client, sid, "ask me")))["waiting"]
    assert question["kind"] == "input"
    wrong = client.post(f"/api/sessions/{sid}/waits/{question['wait_id']}/approve", json={})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_argument")
    answered = client.post(f"/api/sessions/{sid}/waits/{question['wait_id']}/answer",
                           json={"text": "Paris"})
    assert finished(frames_of(answered))["final_text"] == "Thanks, noted: Paris"

    stored = site.view.snapshot(sid)
    stored.check_consistent()
    assert [s.status for s in stored.sends] == ["done"] * 3
    results = [p for m in stored.messages for p in m.body["parts"] if p["kind"] == "tool_result"]
    assert [(r["name"], r["is_error"]) for r in results] == [
        ("wire_money", False), ("wire_money", True), ("ask_user", False)]


def test_a_decision_whose_send_a_worker_took_up_still_ends_with_it(client: httpx.Client,
                                                                    site: Site) -> None:
    """Once a decision is stored, the send waits on nobody, and a worker may take it up
    before the web process continues it. Here the test is that worker: it holds the
    session's lease while the approval is made, then finishes the send itself. The
    approval's answer must still end with how the send ended (found flaky in CI when
    the example continued with ``resume``, which returns ``None`` then)."""
    sid = new_session(client)
    (wait,) = finished(frames_of(send(client, sid, "pay Carol 3")))["waiting"]
    view = site.view
    claim = view.run(view.store.claim_session(sid, owner="test-worker", ttl=60))
    # The example's own loop (imported by name: mypy checks ``examples`` as top-level).
    agent = importlib.import_module("examples.web.agent")
    settings = agent.Settings(dsn="unused", table_prefix=view.prefix, lease_ttl=3,
                              research_seconds=0.5)
    worker = agent.make_loop(view.store, settings, agent.make_llm(),
                             agent.make_tools(settings))
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            client.post, f"/api/sessions/{sid}/waits/{wait['wait_id']}/approve", json={})
        wait_until(lambda: not view.run(worker.waiting_for(sid)), "the decision", WAIT)
        result = view.run(worker.resume_claimed(claim))
        response = answer.result(timeout=60)
    done = finished(frames_of(response))
    assert (done["status"], done["final_text"]) == ("done", "Done: wired 3 EUR to Carol")
    assert result is not None and result.final_text == done["final_text"]
    stored = view.snapshot(sid)
    stored.check_consistent()
    results = [p for m in stored.messages for p in m.body["parts"] if p["kind"] == "tool_result"]
    assert [(r["name"], r["is_error"]) for r in results] == [("wire_money", False)]


def test_bad_requests_get_a_code_and_change_nothing(client: httpx.Client, site: Site) -> None:
    sid = new_session(client)
    base = f"/api/sessions/{sid}"
    cases: list[tuple[httpx.Response, int, str]] = [
        (client.post(base + "/messages", content=b"not json"), 400, "invalid_argument"),
        (client.post(base + "/messages", json=["a list"]), 400, "invalid_argument"),
        (client.post(base + "/messages", json={"text": ""}), 400, "invalid_argument"),
        (client.post(base + "/messages", json={"text": 5}), 400, "invalid_argument"),
        (client.post(base + "/messages", json={"text": "x" * 20_001}), 400,
         "invalid_argument"),
        (client.post(base + "/messages", content=b"{" + b" " * 300_000 + b"}"), 400,
         "invalid_argument"),
        (send(client, "no-such-session", "hi"), 404, "session_not_found"),
        (client.get("/api/sessions/no-such-session"), 404, "session_not_found"),
        (client.post(base + "/waits/call_9/approve", json={}), 404, "wait_not_found"),
        (client.post(base + "/waits/call_9/answer", json={}), 400, "invalid_argument"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["code"]) == (status, code), \
            response.text
    assert site.view.snapshot(sid).messages == []
    assert client.post(base + "/waits/call_9/launch", json={}).status_code == 404


def test_a_bad_cursor_or_a_missing_session_ends_the_feed_with_a_problem(
        client: httpx.Client) -> None:
    sid = new_session(client)
    send(client, sid, "hi")
    other = new_session(client)
    send(client, other, "hi")
    foreign = feed(client, other)[-1].id
    assert foreign is not None
    for after in ("garbage", foreign, "f1.AAAA"):
        (problem,) = feed(client, sid, after=after)
        assert (problem.event, problem.data["code"]) == ("problem", "invalid_argument")
    (problem,) = feed(client, "no-such-session")
    assert problem.data["code"] == "session_not_found"


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300)
       .filter(lambda t: t.strip() != "")
       | st.sampled_from(["<script>alert(1)</script>", "data: x\n\nevent: end\n\n",
                          "id: f1.x\r\n\r\n", "\u2028\u2029\x00", "</textarea><img onerror=1>"]))
def test_any_text_reaches_the_store_and_the_feed_exactly(client: httpx.Client, site: Site,
                                                         text: str) -> None:
    sid = new_session(client)
    response = send(client, sid, text)
    frames = frames_of(response)
    assert [f.event for f in frames][-1] == "end"  # no text breaks the framing
    (user, *_) = [f for f in feed(client, sid) if f.event == "message"]
    assert user.data["parts"] == [{"kind": "text", "text": text}]
    assert site.view.snapshot(sid).messages[0].body["parts"][0]["text"] == text


@pytest.mark.backends("sqlite")
def test_sigterm_ends_open_streams_at_once_so_pages_reconnect_elsewhere(
        view: StoreView, tmp_path: Path) -> None:
    # uvicorn waits for open responses when it stops, and a feed never ends by itself:
    # without this, the stream would be cut off only at its graceful-shutdown timeout.
    web = Process("web", view.dsn, view.prefix, tmp_path / "web.log").start()
    try:
        with httpx.Client(base_url=web.url, timeout=60) as client:
            sid = new_session(client)
            with client.stream("GET", f"/api/sessions/{sid}/feed") as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("retry:")
                assert web.proc is not None
                web.proc.send_signal(signal.SIGTERM)
                rest = list(lines)  # a cut connection would raise here
        assert parse_frames(rest)[-1].event == "end"
        assert web.proc.wait(WAIT) in (0, -signal.SIGTERM)
    finally:
        web.stop()


@pytest.mark.backends("sqlite")
def test_a_send_running_past_the_shutdown_grace_is_handed_to_a_worker(
        view: StoreView, tmp_path: Path) -> None:
    web = Process("web", view.dsn, view.prefix, tmp_path / "web.log",
                  options=["--research-seconds", "3600", "--grace", "0.2"]).start()
    worker = Process("worker", view.dsn, view.prefix, tmp_path / "worker.log",
                     options=["--research-seconds", "0", "--poll", "0.2"])
    try:
        with httpx.Client(base_url=web.url, timeout=60) as client:
            sid = new_session(client)
            with client.stream("POST", f"/api/sessions/{sid}/messages",
                               json={"text": "research tides"}) as stream:
                lines: list[str] = []
                received = stream.iter_lines()
                for line in received:
                    lines.append(line)
                    if any(e["type"] == "ToolCallStarted" for e in live(parse_frames(lines))):
                        break
                assert web.proc is not None
                web.proc.send_signal(signal.SIGTERM)  # the tool would run for an hour
                rest = list(received)  # the stream ends at once (a cut one would raise)
        assert parse_frames(rest)[-1].event == "end"
        assert web.proc.wait(WAIT) in (0, -signal.SIGTERM)
        handed = view.snapshot(sid)
        assert handed.sends[0].status == "pending"  # not ended "cancelled"
        assert view.lease_lapsed(sid)                # and free for a worker at once
        worker.start()
        wait_until(lambda: view.snapshot(sid).sends[0].status == "done",
                   "a worker to finish the handed-over send")
        done = view.snapshot(sid)
        done.check_consistent()
        assert [m.role for m in done.messages] == ["user", "assistant", "tool", "assistant"]
    finally:
        web.stop()
        worker.stop()
