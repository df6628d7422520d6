"""The inspector's Starlette application: routes, login, live updates, errors.

Imported only by :func:`power_loop.inspector.create_inspector_app`, once the ``web``
extra is known to be installed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from power_loop.errors import (
    InvalidArgumentError,
    PowerLoopError,
    SessionNotFoundError,
    WorkflowNotFoundError,
)
from power_loop.inspector.guard import COOKIE, Guard, cookie_value, same
from power_loop.inspector.layout import page
from power_loop.inspector.listing import sessions_page, timers_page, workflow_page, workflows_page
from power_loop.inspector.markup import ROOT, Markup, el, path
from power_loop.inspector.reading import Reader
from power_loop.inspector.session import session_body, session_page, tree_page
from power_loop.store import Store

STATIC = Path(__file__).with_name("static")
MAX_LOGIN_BYTES = 4096


def _html(markup: Markup, status: int = 200) -> HTMLResponse:
    return HTMLResponse(str(markup), status_code=status)


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value or None


def _id(request: Request) -> str:
    # Ids travel in the query string: any text (a slash too) survives the trip.
    value = request.query_params.get("id")
    if not value:
        raise HTTPException(400, "which one? pass ?id=")
    return value


def _login_form(reader: Reader, message: str | None = None) -> Markup:
    return page("Sign in",
                el("p", message, class_="error") if message else None,
                el("form", el("label", "Token ", el("input", type="password", name="token",
                                                    autocomplete="current-password",
                                                    required=True)),
                   el("button", "Sign in", type="submit"), method="post",
                   action=path("login")),
                backend=reader.backend)


def build(store: Store, *, token: str | None) -> Guard:
    """The ASGI application over ``store`` (the caller opens and closes it)."""
    reader = Reader(store)

    async def index(_: Request) -> Response:
        return RedirectResponse(path("sessions"), status_code=303)

    async def sessions(request: Request) -> Response:
        return _html(await sessions_page(reader, state=_param(request, "state"),
                                         text=_param(request, "q")))

    async def session(request: Request) -> Response:
        return _html(await session_page(reader, _id(request)))

    async def fragment(request: Request) -> Response:
        return _html(session_body(await reader.session(_id(request))))

    async def tree(request: Request) -> Response:
        return _html(await tree_page(reader, _id(request)))

    async def timers(request: Request) -> Response:
        return _html(await timers_page(reader, status=_param(request, "status")))

    async def workflows(_: Request) -> Response:
        return _html(await workflows_page(reader))

    async def workflow(request: Request) -> Response:
        return _html(await workflow_page(reader, _id(request)))

    async def live(request: Request) -> Response:
        sid = _id(request)
        await reader.session_exists(sid)
        after = request.headers.get("last-event-id") or _param(request, "after")
        return StreamingResponse(_events(reader, sid, after), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def no_icon(_: Request) -> Response:
        return Response(status_code=204)

    async def login(request: Request) -> Response:
        if request.method == "GET" or token is None:
            return _html(_login_form(reader, None if token else "no token is needed here"))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:
                raise HTTPException(413, "the form is too large")
        given = dict(parse_qsl(body.decode("utf-8", "replace"))).get("token", "")
        if not same(given, token):
            return _html(_login_form(reader, "wrong token"), status=401)
        response = RedirectResponse(path("sessions"), status_code=303)
        response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path=ROOT.get() or "/")
        return response

    async def failed(request: Request, exc: Exception) -> Response:
        status = 500
        if isinstance(exc, SessionNotFoundError | WorkflowNotFoundError):
            status = 404
        elif isinstance(exc, InvalidArgumentError):
            status = 400
        code = exc.code if isinstance(exc, PowerLoopError) else "error"
        message = exc.message if isinstance(exc, PowerLoopError) else str(exc)
        return _html(page("Not shown", el("p", f"[{code}] {message}", class_="error"),
                          backend=reader.backend), status=status)

    async def http_failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _html(page("Not shown", el("p", exc.detail, class_="error"),
                          backend=reader.backend), status=exc.status_code)

    app = Starlette(routes=[
        Route("/", index),
        Route("/sessions", sessions),
        Route("/session", session),
        Route("/session/fragment", fragment),
        Route("/session/tree", tree),
        Route("/session/live", live),
        Route("/timers", timers),
        Route("/workflows", workflows),
        Route("/workflow", workflow),
        Route("/favicon.ico", no_icon),
        Route("/login", login, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], exception_handlers={PowerLoopError: failed, HTTPException: http_failed})
    return Guard(app, token)


async def _events(reader: Reader, session_id: str, after: str | None) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    try:
        async for item in reader.follow(session_id, after):
            data = json.dumps({"kind": item.kind, "send_index": item.send_index})
            yield f"id: {item.cursor}\nevent: change\ndata: {data}\n\n"
    except PowerLoopError as exc:  # a cursor from another session, a store gone away
        yield f"event: failed\ndata: {json.dumps({'code': exc.code})}\n\n"
