"""The core the fake provider servers share: a scripted HTTP/1.1 server on 127.0.0.1.

A test queues :class:`Reply` s (or functions from the request to a reply); each HTTP
request takes the next one. Every request is recorded (method, path, headers, JSON
body, arrival time), so a test can count attempts and read what an adapter sent.

A reply is a status, headers and either a whole body (sent with ``Content-Length``) or
SSE frames (sent with ``Transfer-Encoding: chunked``, one chunk per frame, flushed, as
the real APIs stream). It can also misbehave the ways real servers do: wait before
answering (``delay``), close the socket in the middle of the stream (``cut_after``),
or stop sending half-way and then drop the connection (``stall_after``).

Nothing here reaches past 127.0.0.1; the server runs in a daemon thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

LONG_WAIT = 30.0
"""Seconds a slow or stalled reply waits: far past any client timeout in the tests."""


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP response.

    Attributes:
        status: The HTTP status.
        headers: Response headers (besides the framing ones the server adds).
        body: A whole body; used when ``events`` is empty.
        events: SSE frames, each sent as its own chunk.
        delay: Seconds to wait before sending anything (a slow server).
        cut_after: Close the socket after this many frames, without ending the body.
        stall_after: Send this many frames, then nothing for ``LONG_WAIT``, then close.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: Sequence[bytes] = ()
    delay: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None


Responder = Reply | Callable[["Recorded"], Reply]


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"),
                                                         ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def pieces(text: str, n: int) -> list[str]:
    """``text`` in ``n`` pieces (fewer when it is shorter)."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, n)))
    return [text[i:i + size] for i in range(0, len(text), size)]


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"content-type": "application/json", **(headers or {})},
                 json.dumps(payload).encode())


def _map(responder: Responder, change: Callable[[Reply], Reply]) -> Responder:
    if callable(responder):
        return lambda request: change(responder(request))
    return change(responder)


def cut(responder: Responder, after: int) -> Responder:
    """``responder``'s reply with the connection closed after ``after`` frames."""
    return _map(responder, lambda r: replace(r, cut_after=after))


def stall(responder: Responder, after: int) -> Responder:
    """``responder``'s reply going silent after ``after`` frames."""
    return _map(responder, lambda r: replace(r, stall_after=after))


def slow(responder: Responder, delay: float = LONG_WAIT) -> Responder:
    """``responder``'s reply sent only after ``delay`` seconds."""
    return _map(responder, lambda r: replace(r, delay=delay))


def then_error(responder: Responder, after: int, frame: bytes) -> Responder:
    """``responder``'s first ``after`` frames, then the error ``frame``, then the end."""
    return _map(responder, lambda r: replace(r, events=(*r.events[:after], frame)))


class WireServer:
    """A scripted HTTP server; subclasses speak one provider's API.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self._queue: deque[Responder] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[Recorded] = []
        self.unscripted = 0
        """Requests that found the queue empty (answered with HTTP 418)."""
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.02,),
                                        name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        assert self._httpd is not None, "the server is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- scripting ---------------------------------------------------------------------

    def script(self, *replies: Responder) -> None:
        """Queue replies, used one per request in order."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def attempts(self) -> int:
        """HTTP requests received so far."""
        return len(self.requests)

    @property
    def remaining(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    # -- serving (called from the handler threads) ---------------------------------------

    def check(self, request: Recorded) -> Reply | None:
        """A reply that refuses ``request`` before the script is consulted (auth...)."""
        return None

    def _take(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            refused = self.check(request)
            if refused is not None:
                return refused
            if not self._queue:
                self.unscripted += 1
                return Reply(418, {"content-type": "text/plain"},
                             b"fake server: no scripted reply left for this request")
            responder = self._queue.popleft()
        return responder(request) if callable(responder) else responder

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: WireServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a slow or cut reply is part of the script


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner = self.server.owner
        reply = owner._take(Recorded(self.command, self.path, headers, body, time.monotonic()))
        if reply.delay:
            owner._wait(reply.delay)
        try:
            self._send(reply, owner)
        except OSError:
            self.close_connection = True

    def _send(self, reply: Reply, owner: WireServer) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if not reply.events:
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i, frame in enumerate(reply.events):
            if i in (reply.cut_after, reply.stall_after):
                if i == reply.stall_after:
                    owner._wait(LONG_WAIT)
                self._hang_up()
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
