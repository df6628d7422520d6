"""Server-sent events: the wire form of live events and of the session feed.

Each frame is ``id:`` (a feed cursor, so the browser's ``Last-Event-ID`` resumes from
it), ``event:`` (what it is) and one ``data:`` line of ASCII JSON (so no text a model
or a user wrote can break the framing). A comment line is a heartbeat: it keeps
proxies and load balancers from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from power_loop import FeedItem, FeedMessage, FeedSend, PowerLoopError, WaitRecord
from power_loop.events import Event, SendFinished
from power_loop.events.sinks import encode_event
from power_loop.llm.messages import encode_part

T = TypeVar("T")

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

HEARTBEAT = b": heartbeat\n\n"
RETRY = b"retry: 1000\n\n"
"""Tells the browser to reconnect one second after a lost connection."""


def frame(event: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {_encode(data)}\n\n".encode("ascii")


def wait_json(wait: WaitRecord) -> dict[str, Any]:
    """What the page needs of a waiting call to show its buttons."""
    return {"wait_id": wait.wait_id, "send_index": wait.send_index, "kind": wait.kind,
            "tool_name": wait.tool_name, "arguments": wait.arguments,
            "status": wait.status}


def event_json(event: Event) -> dict[str, Any]:
    """A live event as JSON, without what only the server should see.

    A tool's traceback stays on the server; a finished send is reduced to its outcome
    (the messages it stored reach the page through the feed).
    """
    if isinstance(event, SendFinished):
        result = event.result
        return {"type": "SendFinished", "session_id": event.session_id,
                "send_index": event.send_index, "status": result.status,
                "stop_reason": result.stop_reason, "final_text": result.final_text,
                "usage": result.usage.to_json(),
                "waiting": [wait_json(w) for w in result.waiting]}
    data = encode_event(event)
    data.pop("traceback", None)
    return data


def problem_json(exc: PowerLoopError) -> dict[str, str]:
    """A library error as the page sees it: its stable code and what to do."""
    return {"code": exc.code, "message": str(exc)[:2000]}


def feed_frame(item: FeedItem) -> bytes:
    """A committed feed item, its cursor as the event id."""
    data: dict[str, Any] = {"cursor": item.cursor, "send_index": item.send_index}
    if isinstance(item, FeedMessage):
        data.update(seq=item.seq, role=item.message.role,
                    parts=[encode_part(p) for p in item.message.parts],
                    created_at=item.created_at.isoformat())
    elif isinstance(item, FeedSend):
        data.update(status=item.status, source=item.source, stop_reason=item.stop_reason,
                    at=item.at.isoformat(),
                    error=None if item.error is None else
                    {"code": str(item.error.get("code", "")),
                     "message": str(item.error.get("message", ""))[:2000]})
    return frame(item.kind, data, item.cursor)


async def with_heartbeats(items: AsyncIterator[T], every: float,
                          stop: asyncio.Event) -> AsyncIterator[T | None]:
    """``items``, with a ``None`` whenever ``every`` seconds pass without one; ends when
    ``stop`` is set (the server is shutting down: the client reconnects elsewhere)."""
    source = aiter(items)
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(source))
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({pending, stopped}, timeout=every,
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                return
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(anext(source))
    finally:
        pending.cancel()
        stopped.cancel()
        await asyncio.gather(pending, stopped, return_exceptions=True)
        closer = getattr(source, "aclose", None)
        if closer is not None:
            await closer()
