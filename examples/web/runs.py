"""A send run for one request, detached from the request that started it.

The send runs in a task of its own: if the browser goes away (a closed tab, a lost
connection) the send goes on, and the page that comes back reads what it stored from
the feed. Its live events reach the request's response while it is there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from power_loop import PowerLoopError, SendResult, hand_over_on_cancel
from power_loop.events import Event, SendFailed, SendFinished

from .sse import HEARTBEAT, event_json, frame, problem_json

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering in nginx (``X-Accel-Buffering``): events go out at once."""


def status_of(exc: PowerLoopError) -> int:
    """The HTTP status of a library error, by its stable code."""
    return {"invalid_argument": 400, "session_not_found": 404, "wait_not_found": 404,
            "wait_already_decided": 409, "session_waiting": 409, "send_pending": 409,
            "session_busy": 409}.get(exc.code, 500)


def problem(exc: PowerLoopError) -> JSONResponse:
    """An error answer: the code and the message saying what to do."""
    return JSONResponse(problem_json(exc), status_code=status_of(exc))


class Run:
    """One detached send (or continuation) and the events it has emitted so far."""

    def __init__(self, runs: set[asyncio.Task[Any]], heartbeat: float,
                 stop: asyncio.Event) -> None:
        self._runs = runs
        self._heartbeat = heartbeat
        self._stop = stop
        self._events: list[Event] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    def emit(self, event: Event) -> None:
        """The loop's ``on_event``: called in the send's task, never blocks."""
        self._events.append(event)
        self._changed.set()

    def finish(self, result: SendResult) -> None:
        """End the stream with ``result`` if no ``SendFinished`` of its send was emitted:
        a send that another process (a worker) continued ends here all the same."""
        if not any(isinstance(e, SendFinished) and e.send_index == result.send_index
                   for e in self._events):
            self.emit(SendFinished(session_id=result.session_id,
                                   send_index=result.send_index, result=result))

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in a task the application keeps until it ends.

        Cancelled (the server stops, past its grace), the send is handed over: it stays
        pending with its lease released, and a worker finishes it.
        """
        async def handed_over() -> Any:
            hand_over_on_cancel()
            return await work

        task = asyncio.create_task(handed_over())
        self._runs.add(task)
        task.add_done_callback(self._ended)
        self._task = task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._runs.discard(task)
        self._changed.set()
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, PowerLoopError):
            # A bug, not a refusal: the page only sees its type, the log sees it all.
            log.error("a send failed unexpectedly", exc_info=exc)

    async def response(self) -> Response:
        """The answer: an event stream, or an error if the send refused to start."""
        assert self._task is not None
        while not (self._task.done()
                   or any(not isinstance(e, SendFailed) for e in self._events)):
            self._changed.clear()
            await self._changed.wait()
        task = self._task
        if task.done() and not task.cancelled():
            exc = task.exception()
            if isinstance(exc, PowerLoopError) and all(
                    isinstance(e, SendFailed) for e in self._events):
                return problem(exc)  # refused before it began: nothing was stored
        return StreamingResponse(self._frames(), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    async def _frames(self) -> AsyncIterator[bytes]:
        assert self._task is not None
        sent = 0
        while True:
            while sent < len(self._events):
                yield frame("live", event_json(self._events[sent]))
                sent += 1
            if self._task.done():
                break
            if self._stop.is_set():  # shutting down: the page follows the feed elsewhere
                yield frame("end", {})
                return
            self._changed.clear()
            waits = {asyncio.ensure_future(self._changed.wait()),
                     asyncio.ensure_future(self._stop.wait())}
            done, rest = await asyncio.wait(waits, timeout=self._heartbeat,
                                            return_when=asyncio.FIRST_COMPLETED)
            for waiting in rest:
                waiting.cancel()
            if not done:
                yield HEARTBEAT
        exc = None if self._task.cancelled() else self._task.exception()
        if isinstance(exc, PowerLoopError):
            yield frame("problem", problem_json(exc))
        elif exc is not None:
            yield frame("problem", {"code": "unexpected", "message": type(exc).__name__})
        yield frame("end", {})
