"""The inspector under a prefix: mounted in another Starlette application, or behind a
proxy that strips the prefix and tells the server (ASGI ``root_path``). Every link of
every page, followed, stays under the prefix and answers."""

from __future__ import annotations

from collections import deque
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from power_loop.inspector import create_inspector_app
from power_loop.inspector.guard import COOKIE
from power_loop.store import Store
from tests.inspector.scenario import PLAIN, make

TOKEN = "a-token-of-sixteen-or-more"
PAGES = 80
"""Pages crawled at most (the scenario's inspector has about 20 distinct ones)."""
_LINKS = ("href", "src", "action", "data-events", "data-fragment")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend(v for k, v in attrs if k in _LINKS and v is not None)


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.found


async def crawl(client: httpx.AsyncClient, start: str, prefix: str) -> dict[str, str]:
    """Every page reachable from ``start`` (the live feed's stream is not read): link ->
    its HTML. Each link must stay under ``prefix`` and answer 200."""
    seen: dict[str, str] = {}
    queue = deque([start])
    while queue and len(seen) < PAGES:
        link = queue.popleft()
        if link in seen:
            continue
        assert link.startswith(prefix + "/"), link
        if urlsplit(link).path == f"{prefix}/session/live":
            seen[link] = ""
            continue
        answer = await client.get(link, headers={"accept": "text/html"})
        assert answer.status_code == 200, (link, answer.status_code, answer.text[:300])
        seen[link] = answer.text
        if answer.headers["content-type"].startswith("text/html"):
            queue.extend(urljoin(link, found) for found in links(answer.text))
    return seen


def _host(inspector: object, prefix: str) -> Starlette:
    async def home(_: Request) -> Response:
        return PlainTextResponse("the host application")

    return Starlette(routes=[Route("/", home), Mount(prefix, app=inspector)])  # type: ignore[arg-type]


def _every_kind_of_page(pages: dict[str, str], prefix: str) -> None:
    routes = {urlsplit(link).path.removeprefix(prefix) for link in pages}
    assert {"/sessions", "/session", "/session/fragment", "/session/tree", "/session/live",
            "/timers", "/workflows", "/workflow", "/static/inspector.css",
            "/static/inspector.js"} <= routes, routes


async def test_mounted_under_a_prefix_every_link_stays_under_it(store: Store) -> None:
    made = await make(store, PLAIN)
    host = _host(create_inspector_app(store), "/tools/inspect")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host),
                                 base_url="http://host.test") as client:
        assert (await client.get("/")).text == "the host application"
        index = await client.get("/tools/inspect/")
        assert (index.status_code, index.headers["location"]) == (
            303, "/tools/inspect/sessions")
        pages = await crawl(client, "/tools/inspect/sessions", "/tools/inspect")
    _every_kind_of_page(pages, "/tools/inspect")
    assert any(made.session_id in page for page in pages.values())


async def test_behind_a_proxy_that_sets_root_path_links_keep_the_prefix(store: Store) -> None:
    """A proxy strips ``/ops``; the server is told (``root_path``), as uvicorn's
    ``--root-path`` or ``power-loop inspect --root-path`` does."""
    await make(store, PLAIN)
    transport = httpx.ASGITransport(app=create_inspector_app(store), root_path="/ops")
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        pages = await crawl(client, "/ops/sessions", "/ops")
    _every_kind_of_page(pages, "/ops")


async def test_the_login_under_a_prefix(store: Store) -> None:
    """The token's redirect, the form and its cookie all live under the prefix."""
    await make(store, PLAIN)
    host = _host(create_inspector_app(store, token=TOKEN), "/inspect")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host),
                                 base_url="http://host.test") as client:
        refused = await client.get("/inspect/sessions", headers={"accept": "text/html"})
        assert (refused.status_code, refused.headers["location"]) == (303, "/inspect/login")
        form = await client.get(refused.headers["location"])
        (action,) = [link for link in links(form.text) if link.endswith("/login")]
        assert action == "/inspect/login"
        signed = await client.post(action, data={"token": TOKEN})
        assert (signed.status_code, signed.headers["location"]) == (303, "/inspect/sessions")
        assert f"{COOKIE}=" in signed.headers["set-cookie"]
        assert "Path=/inspect;" in signed.headers["set-cookie"]
        pages = await crawl(client, "/inspect/sessions", "/inspect")
    _every_kind_of_page(pages, "/inspect")
