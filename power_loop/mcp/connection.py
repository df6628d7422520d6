"""One live connection to an MCP server, shared by every loop of a process.

The SDK's client is an async context manager whose scopes must be left in the task that
entered them, so each connection lives in a task of its own (``_hold``); calls are made
from the callers' tasks. Connections are opened on first use, one per server and event
loop, and kept until :meth:`MCPServer.aclose <power_loop.mcp.MCPServer.aclose>` or the
end of the event loop.

A connection that died (the stdio server exited, the HTTP session is gone) is opened
anew by the next call: a new process, a new session. A call the connection dropped
*during* is repeated once on a new connection only when its tool is safe to repeat;
otherwise the model is told the outcome is unknown.

This is the one place SDK and transport exceptions are mapped to ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from power_loop.errors import MCPServerError, MissingDriverError, ToolError
from power_loop.mcp.content import tool_output
from power_loop.mcp.tools import build_tools
from power_loop.tools.sources import ToolListing, diff_tools

if TYPE_CHECKING:
    from power_loop.mcp.server import MCPServer

log = logging.getLogger("power_loop.mcp")

CLOSE_WAIT = 5.0
"""Seconds a closing connection waits for the SDK to end the session (and a stdio
server's process) before cancelling it."""
MAX_PAGES = 100
"""``tools/list`` pages read at most (a server paging forever is cut off there)."""

_pool: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Connection]] = \
    weakref.WeakKeyDictionary()


def connection_for(server: MCPServer) -> Connection:
    """The connection this event loop shares for ``server`` (not opened yet)."""
    loop = asyncio.get_running_loop()
    conns = _pool.setdefault(loop, {})
    found = conns.get(server.key)
    if found is None:
        found = conns[server.key] = Connection(server)
    return found


def pooled(server: MCPServer) -> Connection | None:
    """The connection of this event loop for ``server``, if there is one."""
    return _pool.get(asyncio.get_running_loop(), {}).get(server.key)


def forget(server: MCPServer) -> Connection | None:
    return _pool.get(asyncio.get_running_loop(), {}).pop(server.key, None)


def _sdk() -> Any:
    try:
        import mcp
    except ImportError as exc:
        raise MissingDriverError("mcp", "mcp") from exc
    return mcp


def _is_closed(exc: BaseException) -> bool:
    """The connection is gone (as opposed to the server answering with an error, or
    with something that is not MCP)."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    return not _is_malformed(exc)


def _session_gone(exc: BaseException) -> bool:
    """The HTTP server no longer knows the session (it restarted, or expired it): the
    request was refused unread, so sending it again on a new session is harmless."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_REQUEST

    return (isinstance(exc, MCPError) and exc.code == INVALID_REQUEST
            and exc.message in ("Session not found", "Session terminated"))


def _is_malformed(exc: BaseException) -> bool:
    """The server answered something that is not a valid MCP result."""
    from pydantic import ValidationError

    return isinstance(exc, (ValidationError, ValueError, TypeError, KeyError))


class Connection:
    """A lazily opened, self-healing client of one MCP server."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._opening = asyncio.Lock()
        self._generation = 0  # bumped on each (re)connection
        self._listed: tuple[int, ToolListing] | None = None  # (generation, listing)
        self._stale = False  # the server said its tool list changed
        self._version = 0

    @property
    def alive(self) -> bool:
        return self._client is not None and self._task is not None and not self._task.done()

    async def _connected(self) -> Any:
        async with self._opening:
            if not self.alive:
                await self._open()
            return self._client

    async def _open(self) -> None:
        _sdk()
        await self._close()
        self._stop = asyncio.Event()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready),
                                         name=f"power_loop mcp {self.server.name}")
        try:
            self._client = await asyncio.wait_for(asyncio.shield(ready),
                                                  self.server.connect_timeout)
        except BaseException as exc:
            await self._close()
            if ready.done() and not ready.cancelled():
                ready.exception()  # retrieved: a late failure is not logged as unseen
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            detail = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
            raise MCPServerError(f"cannot connect to MCP server {self.server.name!r} "
                                 f"({self.server.describe()}): {detail}",
                                 server=self.server.name) from exc
        self._generation += 1

    async def _hold(self, ready: asyncio.Future[Any]) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self.server.open_transport(stack)
                client = await stack.enter_async_context(Client(
                    transport, mode="legacy", cache=None, message_handler=self._on_message))
                if not ready.done():
                    ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:  # the connection's end, however it came
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else
                                    ConnectionError(f"connection ended: {type(exc).__name__}"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.info("MCP server %r: connection ended: %s", self.server.name, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _on_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if method == "notifications/tools/list_changed":
            self._stale = True

    async def _close(self) -> None:
        task, self._task = self._task, None
        self._client = None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT)
        except asyncio.CancelledError:
            task.cancel()  # the caller is being cancelled: don't leave the task behind
            raise
        except BaseException:  # it did not end in time, or ended with an error
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def aclose(self) -> None:
        """End the connection (a stdio server's process with it)."""
        async with self._opening:
            await self._close()

    # -- listing ---------------------------------------------------------------------

    async def listing(self) -> ToolListing:
        """The server's tools: listed once per connection, again after the server says
        they changed. The last listing stands in while the server is unreachable."""
        try:
            client = await self._connected()
            if (self._listed is not None and not self._stale
                    and self._listed[0] == self._generation):
                return self._listed[1]
            self._stale = False
            listed = await asyncio.wait_for(self._list_all(client), self.server.connect_timeout)
        except MCPServerError:
            if self._listed is not None:
                return self._listed[1]
            raise
        except Exception as exc:
            if _is_closed(exc) or _session_gone(exc):
                await self.aclose()
            if self._listed is not None:
                log.warning("MCP server %r: cannot list tools (%s); using the last list",
                            self.server.name, _describe(exc))
                return self._listed[1]
            detail = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
            raise MCPServerError(f"cannot list the tools of MCP server {self.server.name!r}: "
                                 f"{detail}", server=self.server.name) from exc
        tools, _ = build_tools(self.server, listed, self.call)
        change = None
        if self._listed is not None:
            change = diff_tools([t.spec for t in self._listed[1].tools],
                                [t.spec for t in tools])
            if change:
                self._version += 1
                log.info("MCP server %r: tool list changed: %s", self.server.name, change)
        listing = ToolListing(tools, self._version)
        self._listed = (self._generation, listing)
        return ToolListing(tools, self._version, change or None)

    async def _list_all(self, client: Any) -> list[Any]:
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            found.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return found

    # -- calls -----------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any], safe: bool) -> str:
        """Call a tool; every failure is a :class:`ToolError` the model reads."""
        for attempt in range(2):
            try:
                client = await self._connected()
            except MCPServerError as exc:
                raise ToolError(f"Error: {exc.message}. Try again later.") from exc
            try:
                result = await client.call_tool(name, arguments)
            except Exception as exc:
                if _session_gone(exc) and attempt == 0:
                    log.info("MCP server %r: session gone; initializing a new one",
                             self.server.name)
                    await self._drop(client)
                    continue
                if _is_malformed(exc):
                    raise ToolError(f"Error: the MCP server {self.server.name!r} answered "
                                    f"with something that is not a valid MCP result: "
                                    f"{_describe(exc)}") from exc
                if not _is_closed(exc):
                    raise ToolError(f"Error: the MCP server {self.server.name!r} refused the "
                                    f"call: {_describe(exc)}") from exc
                await self._drop(client)
                if safe and attempt == 0:
                    log.info("MCP server %r: connection lost during %s; calling again",
                             self.server.name, name)
                    continue
                raise ToolError(
                    f"Error: the connection to MCP server {self.server.name!r} was lost during "
                    "the call; whether it took effect is unknown. Check before trying "
                    "again.") from exc
            text = tool_output(result)
            if len(text) > self.server.max_result_chars:
                raise ToolError(
                    f"Error: the result of {name!r} is {len(text)} characters, over the limit "
                    f"of {self.server.max_result_chars}; ask for less.")
            return text
        raise AssertionError("unreachable")

    async def _drop(self, client: Any) -> None:
        async with self._opening:
            if self._client is client or self._client is None:
                await self._close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    text = str(exc).strip() or type(exc).__name__
    return text[:300] + ("..." if len(text) > 300 else "")
