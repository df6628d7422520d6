"""The web process: a Starlette application over one store, opened in the lifespan.

Routes (JSON in, JSON or server-sent events out):

* ``POST /api/sessions``: a new session.
* ``GET /api/sessions/{id}``: what its send waits on (approval buttons after a reload).
* ``POST /api/sessions/{id}/messages`` ``{"text", "request_key"?}``: a send, answered as
  an event stream of its live events.
* ``GET /api/sessions/{id}/feed?after=CURSOR``: the session's committed feed, from the
  cursor (or the ``Last-Event-ID`` of a reconnecting ``EventSource``), following it.
* ``POST /api/sessions/{id}/waits/{call}/approve|reject|answer``: a decision; the send's
  continuation is answered as an event stream, like a send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from power_loop import (
    InvalidArgumentError,
    PowerLoopError,
    SendResult,
    StatefulAgentLoop,
    open_store,
)
from power_loop.events import Event

from .agent import Settings, make_llm, make_loop, make_tools
from .runs import SSE_HEADERS, Run, problem
from .sse import HEARTBEAT, RETRY, feed_frame, frame, problem_json, wait_json, with_heartbeats

STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT = 20_000
MAX_BODY = 256 * 1024
SECURITY_HEADERS = {
    # No inline script, no foreign origin: stored text can never become code.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (plain ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, *, heartbeat: float = 15.0,
               shutdown_grace: float = 10.0) -> Starlette:
    """The application (serve it with uvicorn; see ``__main__``)."""
    llm = make_llm()
    tools = make_tools(settings)
    runs: set[asyncio.Task[Any]] = set()
    stopping = asyncio.Event()  # set by stop_streams(): open streams end, clients go elsewhere

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Once per process: connections, the schema check, the window cache.
        async with await open_store(settings.dsn,
                                    table_prefix=settings.table_prefix) as store:
            app.state.store = store
            app.state.loop = asyncio.get_running_loop()
            yield
            if runs:  # let running sends finish; the rest are handed to the workers
                await asyncio.wait(set(runs), timeout=shutdown_grace)
            for task in set(runs):
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)

    def loop_for(request: Request,
                 on_event: Callable[[Event], None] | None = None) -> StatefulAgentLoop:
        return make_loop(request.app.state.store, settings, llm, tools, on_event)

    async def body_of(request: Request) -> dict[str, Any]:
        data = bytearray()
        async for chunk in request.stream():  # bounded: a huge body is refused early
            data += chunk
            if len(data) > MAX_BODY:
                raise InvalidArgumentError(f"the body is over {MAX_BODY} bytes")
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            raise InvalidArgumentError("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise InvalidArgumentError("the body must be a JSON object")
        return body

    def text_field(body: dict[str, Any], name: str, *, required: bool) -> str | None:
        value = body.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise InvalidArgumentError(
                f"{name!r} must be a non-empty string of at most {MAX_TEXT} characters")
        return value

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def create_session(request: Request) -> Response:
        session_id = await loop_for(request).new_session(metadata={"app": "web-example"})
        return JSONResponse({"session_id": session_id}, status_code=201)

    async def show_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            await request.app.state.store.get_session(session_id)
            waiting = await loop_for(request).waiting_for(session_id)
        except PowerLoopError as exc:
            return problem(exc)
        return JSONResponse({"session_id": session_id,
                             "waiting": [wait_json(w) for w in waiting]})

    async def send_message(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            body = await body_of(request)
            text = text_field(body, "text", required=True)
            key = text_field(body, "request_key", required=False)
        except PowerLoopError as exc:
            return problem(exc)
        assert text is not None
        run = Run(runs, heartbeat, stopping)
        run.start(loop_for(request, run.emit).send(text, session_id, request_key=key))
        return await run.response()

    async def decide(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        call_id = request.path_params["call_id"]
        action = request.path_params["action"]
        if action not in ("approve", "reject", "answer"):
            return JSONResponse({"code": "not_found", "message": "no such action"},
                                status_code=404)
        try:
            body = await body_of(request)
            reason = text_field(body, "reason", required=False) if action == "reject" else None
            answer = text_field(body, "text", required=True) if action == "answer" else None
        except PowerLoopError as exc:
            return problem(exc)
        run = Run(runs, heartbeat, stopping)
        loop = loop_for(request, run.emit)

        async def go_on() -> SendResult:
            # The decision, then the send's continuation in this process. A worker may
            # take the send up between the two: the loop then waits for it and returns
            # what it stored, and the stream ends with that as it would have here.
            if action == "approve":
                result = await loop.approve(session_id, call_id)
            elif action == "reject":
                result = await loop.reject(session_id, call_id, reason=reason)
            else:
                assert answer is not None
                result = await loop.answer(session_id, call_id, answer)
            run.finish(result)
            return result

        run.start(go_on())  # a refused decision is answered as an error, as before
        return await run.response()

    async def feed(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        after = (request.headers.get("last-event-id")
                 or request.query_params.get("after") or None)
        follow = request.query_params.get("follow", "1") != "0"
        watch = loop_for(request).watch(session_id, after=after, follow=follow)

        async def frames() -> AsyncIterator[bytes]:
            yield RETRY
            try:
                async for item in with_heartbeats(watch, heartbeat, stopping):
                    yield HEARTBEAT if item is None else feed_frame(item)
            except PowerLoopError as exc:  # a bad cursor, a deleted session
                yield frame("problem", problem_json(exc))
            yield frame("end", {})

        return StreamingResponse(frames(), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    routes = [
        Route("/", index),
        Route("/api/sessions", create_session, methods=["POST"]),
        Route("/api/sessions/{session_id}", show_session),
        Route("/api/sessions/{session_id}/messages", send_message, methods=["POST"]),
        Route("/api/sessions/{session_id}/feed", feed),
        Route("/api/sessions/{session_id}/waits/{call_id}/{action}", decide,
              methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(SecurityHeaders)])
    app.state.stopping = stopping
    return app


def stop_streams(app: Starlette) -> None:
    """End every open event stream now (safe from a signal handler).

    A server shutting down waits for its open responses, and a feed never ends by
    itself: without this, every open page would hold the shutdown up to the server's
    graceful timeout. The pages reconnect from their cursors, to another process or to
    this one's successor. Running sends go on until the lifespan's grace.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(app.state, "loop", None)
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(app.state.stopping.set)
