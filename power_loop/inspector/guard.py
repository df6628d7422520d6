"""The headers every response carries, and the token that guards every page.

The token comes in an ``Authorization: Bearer`` header (scripts) or as a cookie the
login form sets (people): ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's page sends it) and holding a digest of the token, not the token. Tokens are
compared in constant time, and never travel in a URL, so no access log holds one.

The guard also tells the pages where the inspector is mounted (the request's ASGI
``root_path``): see :data:`power_loop.inspector.markup.ROOT`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from power_loop.inspector.markup import ROOT, mount_root

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = ("default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
"""No inline script, no plugin, no framing: stored text can never run as code."""
COOKIE = "pl_inspector"
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
"""What answers without the token: the login form and the stylesheet and script."""


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (the token itself never leaves)."""
    return hmac.new(token.encode("utf-8"), b"power_loop inspector cookie",
                    hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def route_of(scope: Scope) -> str:
    """The request's path within the inspector: without the ``root_path`` it is mounted
    under (which ``path`` includes when a ``Mount`` or server put it there)."""
    route, root = str(scope.get("path", "")), str(scope.get("root_path", "")).rstrip("/")
    if root and route.startswith(root) and route[len(root):len(root) + 1] in ("", "/"):
        return route[len(root):] or "/"
    return route


def authorized(scope: Scope, token: str) -> bool:
    """Whether the request carries the token (header) or the login cookie."""
    bearer = _header(scope, b"authorization")
    if bearer[:7].lower() == "bearer " and same(bearer[7:].strip(), token):
        return True
    cookies = SimpleCookie()
    try:
        cookies.load(_header(scope, b"cookie"))
    except Exception:  # a malformed Cookie header is no credential
        return False
    morsel = cookies.get(COOKIE)
    return morsel is not None and same(morsel.value, cookie_value(token))


class Guard:
    """ASGI middleware: security headers on every response; the token on every page."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        root = ROOT.set(mount_root(str(scope.get("root_path", ""))))
        try:
            await self._guarded(scope, receive, with_headers)
        finally:
            ROOT.reset(root)

    async def _guarded(self, scope: Scope, receive: Receive, with_headers: Send) -> None:
        if (self._token is None or route_of(scope).startswith(OPEN_PATHS)
                or authorized(scope, self._token)):
            await self._app(scope, receive, with_headers)
            return
        wants_page = "text/html" in _header(scope, b"accept")
        if wants_page:
            login = (ROOT.get() + "/login").encode("latin-1")
            await _respond(with_headers, 303, b"", [(b"location", login)])
        else:
            await _respond(with_headers, 401, b"a token is required\n",
                           [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"www-authenticate", b"Bearer")])


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
