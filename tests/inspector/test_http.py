"""``power-loop inspect`` over HTTP, as a real uvicorn process, on every backend."""

from __future__ import annotations

import html
import json
from urllib.parse import urlencode

import httpx
import pytest

from power_loop.inspector.guard import CSP
from power_loop.workflows._journal import Journal
from tests.durability.harness import ThreadedStoreView
from tests.inspector.harness import inspector, table_contents
from tests.inspector.scenario import PLAIN, Made, make, make_loop


def _get(client: httpx.Client, route: str, **query: str) -> httpx.Response:
    answer = client.get(f"{route}?{urlencode(query)}" if query else route,
                        headers={"accept": "text/html"})
    assert answer.status_code == 200, (route, query, answer.text[:500])
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    return answer


def _pages(client: httpx.Client, made: Made) -> dict[str, str]:
    """Every page of the inspector, by name."""
    return {
        "sessions": _get(client, "/sessions").text,
        "pending": _get(client, "/sessions", state="pending").text,
        "waiting": _get(client, "/sessions", state="waiting").text,
        "parked": _get(client, "/sessions", state="parked").text,
        "search": _get(client, "/sessions", q="trip").text,
        "session": _get(client, "/session", id=made.session_id).text,
        "fragment": _get(client, "/session/fragment", id=made.session_id).text,
        "tree": _get(client, "/session/tree", id=made.child_id).text,
        "child": _get(client, "/session", id=made.child_id).text,
        "timers": _get(client, "/timers").text,
        "scheduled": _get(client, "/timers", status="scheduled").text,
        "workflows": _get(client, "/workflows").text,
        "workflow": _get(client, "/workflow", id=made.workflow_id).text,
        "css": _get(client, "/static/inspector.css").text,
        "js": _get(client, "/static/inspector.js").text,
    }


def _link(session_id: str) -> str:
    return html.escape(f'href="/session?{urlencode({"id": session_id})}"', quote=False)


def test_every_page_shows_the_store_and_writes_nothing(view: ThreadedStoreView) -> None:
    made = view.run(make(view.store, PLAIN))
    before = view.run(table_contents(view.store))
    with inspector(view.dsn, view.prefix) as running, running.client() as client:
        pages = _pages(client, made)
        assert client.get("/", follow_redirects=False).headers["location"] == "/sessions"
        missing = client.get("/session", params={"id": "nobody"})
        assert missing.status_code == 404 and "session_not_found" in missing.text
        assert client.get("/sessions", params={"state": "done"}).status_code == 400
        assert client.get("/workflow", params={"id": "wf_none"}).status_code == 404
        with client.stream("GET", "/session/live", params={"id": made.session_id}) as feed:
            lines = feed.iter_lines()
            assert next(lines) == "retry: 2000"
            # From the start, the feed replays the session: its first send's start.
            assert [next(lines) for _ in range(4)][2:] == [
                "event: change", 'data: {"kind": "send", "send_index": 0}']
    assert view.run(table_contents(view.store)) == before  # browsing wrote nothing

    # The lists, against the store: the session waits (so it is pending too), the child
    # finished; a search finds the session by its id.
    assert _link(made.session_id) in pages["waiting"]
    assert _link(made.session_id) in pages["pending"]
    assert _link(made.child_id) not in pages["pending"]
    assert _link(made.child_id) in pages["sessions"]
    assert "no sessions match" in pages["parked"]
    assert _link(made.session_id) in pages["search"]
    # The timeline: every committed message's text, call and result, as stored.
    session = pages["session"]
    history = view.run(view.store.read_messages(made.session_id))
    for record in history:
        for part in record.body.get("content") or []:
            for key in ("text", "name", "content"):
                if isinstance(part, dict) and isinstance(part.get(key), str):
                    assert html.escape(part[key]) in session, part
    for text in (PLAIN.question, "found: Lyon", "unknown tool", "wire_money", "Pay Bob.",
                 PLAIN.answer, PLAIN.metadata, PLAIN.timer, made.wait_id, PLAIN.summary):
        assert html.escape(text) in session, text
    (note,) = view.run(view.store.list_notes(made.session_id))
    assert note.text == PLAIN.note and f"<td>{note.note_id}</td><td><pre>{note.text}" in session
    (fold,) = view.run(view.store.list_folds(made.session_id))
    assert f"<td>{fold.fold_index}</td><td><span class=\"badge done\">done</span></td>" \
        f"<td>summary</td><td>0-1</td>" in session
    sends = view.run(view.store.list_sends(made.session_id))
    assert [s.status for s in sends] == ["done", "pending"]
    assert session.count('<span class="badge done">done</span>') >= 1
    assert '<span class="badge waiting">waiting</span>' in session  # the approval
    assert pages["fragment"].startswith('<div id="session"')
    # The tree from the child: its root and the child, the agent's name.
    assert _link(made.session_id) in pages["tree"] and "agent helper" in pages["tree"]
    assert PLAIN.child_answer in pages["child"]
    assert made.timer_id in pages["timers"] and made.timer_id in pages["scheduled"]
    assert made.workflow_id in pages["workflows"]
    steps = view.run(Journal(view.store).steps(made.workflow_id))
    assert steps
    for step in steps.values():
        assert (f"<tr><td>{html.escape(step.path)}</td><td>{step.kind}</td><td><span "
                f'class="badge {step.status}">{step.status}</span></td>') in pages["workflow"]
        if step.child_session:
            assert _link(step.child_session) in pages["workflow"]


def test_a_session_page_follows_the_feed(view: ThreadedStoreView) -> None:
    made = view.run(make(view.store, PLAIN))
    with inspector(view.dsn, view.prefix) as running, running.client() as client:
        page = _get(client, "/session", id=made.session_id).text
        cursor = page.split('data-cursor="', 1)[1].split('"', 1)[0]
        assert cursor
        route = f"/session/live?{urlencode({'id': made.session_id, 'after': cursor})}"
        with client.stream("GET", route) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            assert next(lines) == "retry: 2000"

            async def approve() -> None:
                async with make_loop(view.store, PLAIN) as loop:
                    await loop.approve(made.session_id, made.wait_id)

            view.run(approve())
            seen: list[dict[str, object]] = []
            ids: list[str] = []
            for line in lines:
                if line.startswith("id: "):
                    ids.append(line[4:])
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                if seen and seen[-1] == {"kind": "send", "send_index": 1}:
                    break
        assert {"kind": "message", "send_index": 1} in seen
        # A reconnecting page sends the last id it saw: nothing is repeated after it.
        again = client.get(f"/session?{urlencode({'id': made.session_id})}").text
        assert html.escape("wired 40 to Pay Bob.") in again
        assert ids[-1] in again  # the page's cursor is where the stream stopped


def test_bad_input_gets_a_page_not_a_crash(view: ThreadedStoreView) -> None:
    with inspector(view.dsn, view.prefix) as running, running.client() as client:
        assert client.get("/session").status_code == 400
        bad = client.get("/sessions", params={"q": "x" * 500})
        assert bad.status_code == 400 and "invalid_argument" in bad.text
        stream = client.get("/session/live", params={"id": "nobody"})
        assert stream.status_code == 404


@pytest.mark.backends("sqlite")
def test_the_token_guards_every_page(view: ThreadedStoreView) -> None:
    from tests.cli_support import cli_env

    token = "t0ken-" + "x" * 20
    env = cli_env(POWER_LOOP_INSPECT_TOKEN=token)
    with inspector(view.dsn, view.prefix, env=env) as running:
        with running.client() as client:
            page = client.get("/sessions", headers={"accept": "text/html"})
            assert (page.status_code, page.headers["location"]) == (303, "/login")
            assert client.get("/sessions").status_code == 401
            assert client.get("/session/live", params={"id": "x"}).status_code == 401
            assert client.get("/static/inspector.js").status_code == 200
            wrong = client.get("/sessions", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = client.get("/sessions", headers={"authorization": f"Bearer {token}"})
            assert right.status_code == 200
            assert client.post("/login", data={"token": token[:-1]}).status_code == 401
            signed = client.post("/login", data={"token": token}, follow_redirects=False)
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
                "SameSite=Strict", "SameSite=strict")
            assert token not in cookie
            assert client.get("/sessions").status_code == 200  # the cookie is enough
        running.process.send_signal(2)
        _, err = running.process.communicate(timeout=20)
    assert token not in err.decode(errors="replace")
