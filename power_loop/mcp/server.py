"""``MCPServer``: a Model Context Protocol server whose tools a loop offers the model."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TextIO

from power_loop.errors import InvalidArgumentError
from power_loop.mcp.connection import connection_for, forget, pooled
from power_loop.mcp.tools import MCPToolPolicy
from power_loop.tools.sources import ToolListing

_NAME = re.compile(r"[A-Za-z0-9_-]{1,24}\Z")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Stdio:
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] | None
    cwd: str | None
    stderr: str | None


@dataclass(frozen=True, slots=True)
class _Http:
    url: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, eq=False)
class MCPServer:
    """An MCP server: put it among a loop's tools and the model gets the server's tools.

    Build one with :meth:`stdio` (a command power_loop starts) or :meth:`http` (a
    streamable HTTP endpoint). Nothing connects until a send needs the tools; the
    connection is then shared by every loop of the process (per event loop), restarted
    or re-initialized when it drops, and closed by :meth:`aclose` or at the end of the
    event loop.

    The model sees each tool as ``{name}__{tool}``, in name order; the list is the
    same in every process listing the same server, so a resumed send builds the same
    requests. Annotations set each tool's policy (``readOnlyHint`` or
    ``idempotentHint``: safe to repeat after a crash; ``destructiveHint``: needs
    approval; none: neither), and ``overrides`` changes it per tool.

    Attributes:
        name: Prefixes the tools' names (1-24 letters, digits, ``_`` or ``-``); unique
            among a loop's servers.
        timeout: Seconds before a call is abandoned (the model gets an error result).
        connect_timeout: Seconds to start, connect and list the tools.
        max_result_chars: A longer result is an error result (shorter ones are still
            cut to the loop's ``max_tool_output_chars``).
        overrides: Per tool (by its name on the server), a :class:`MCPToolPolicy`.
        approve_destructive: Tools annotated ``destructiveHint`` need approval.
    """

    name: str
    transport: _Stdio | _Http
    timeout: float = 60.0
    connect_timeout: float = 30.0
    max_result_chars: int = 1_000_000
    overrides: Mapping[str, MCPToolPolicy] = field(default_factory=lambda: _EMPTY)
    approve_destructive: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidArgumentError(f"MCP server name {self.name!r} must be 1-24 letters, "
                                       "digits, '_' or '-' (it prefixes the tools' names)")
        for what, value in (("timeout", self.timeout), ("connect_timeout", self.connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgumentError(f"MCP server {self.name!r}: {what} must be seconds "
                                           f"above 0, not {value!r}")
        if isinstance(self.max_result_chars, bool) or not isinstance(self.max_result_chars, int) \
                or self.max_result_chars < 1:
            raise InvalidArgumentError(f"MCP server {self.name!r}: max_result_chars must be a "
                                       "positive integer")
        for tool, policy in self.overrides.items():
            if not isinstance(policy, MCPToolPolicy):
                raise InvalidArgumentError(f"MCP server {self.name!r}: the override of {tool!r} "
                                           "must be an MCPToolPolicy")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @classmethod
    def stdio(cls, name: str, command: str, args: Sequence[str] = (), *,
              env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
              stderr: str | os.PathLike[str] | None = None, **options: Any) -> MCPServer:
        """A server power_loop starts as a process and talks to over stdin/stdout.

        Args:
            name: Prefixes the tools' names.
            command: The executable (e.g. ``sys.executable``, ``"npx"``).
            args: Its arguments.
            env: Variables set for it, over the SDK's safe defaults (``PATH``, ``HOME``...;
                the rest of this process's environment is not passed on).
            cwd: Its working directory.
            stderr: A file its standard error is appended to (``None``: discarded).
            **options: ``timeout``, ``connect_timeout``, ``max_result_chars``,
                ``overrides``, ``approve_destructive``.
        """
        transport = _Stdio(str(command), tuple(str(a) for a in args),
                           None if env is None else tuple(sorted(env.items())),
                           None if cwd is None else os.fspath(cwd),
                           None if stderr is None else os.fspath(stderr))
        return cls(name, transport, **options)

    @classmethod
    def http(cls, name: str, url: str, *, headers: Mapping[str, str] | None = None,
             **options: Any) -> MCPServer:
        """A server reached over streamable HTTP at ``url``.

        Args:
            name: Prefixes the tools' names.
            url: The MCP endpoint, e.g. ``"https://example.com/mcp"``.
            headers: Sent with every request (e.g. ``Authorization``).
            **options: As for :meth:`stdio`.
        """
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"MCP server {name!r}: url must start with http:// or "
                                       f"https://, not {url!r}")
        return cls(name, _Http(url, tuple(sorted((headers or {}).items()))), **options)

    def __repr__(self) -> str:
        return f"MCPServer({self.name!r}, {self.describe()})"

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two servers the same connection."""
        return (self.name, self.transport, self.timeout, self.connect_timeout,
                self.max_result_chars, tuple(sorted(self.overrides.items(), key=str)),
                self.approve_destructive)

    def describe(self) -> str:
        """Where the server is, for messages (never the headers: they hold secrets)."""
        if isinstance(self.transport, _Http):
            return self.transport.url
        return " ".join([self.transport.command, *self.transport.args])[:200]

    @property
    def source_name(self) -> str:
        return self.name

    async def list_tools(self) -> ToolListing:
        """The server's tools as power_loop tools (connecting if need be).

        Raises:
            MCPServerError: The server could not be reached or listed, and this process
                has no earlier list of it.
        """
        return await connection_for(self).listing()

    async def aclose(self) -> None:
        """Close this server's connection in the running event loop (a stdio server's
        process ends with it). A later send opens a new one."""
        conn = forget(self)
        if conn is not None:
            await conn.aclose()

    @property
    def connected(self) -> bool:
        """Whether this event loop holds a live connection to the server."""
        conn = pooled(self)
        return conn is not None and conn.alive

    async def open_transport(self, stack: contextlib.AsyncExitStack) -> Any:
        """The SDK transport, its resources entered on ``stack`` (called by the connection)."""
        spec = self.transport
        if isinstance(spec, _Http):
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            http = await stack.enter_async_context(create_mcp_http_client(
                headers=dict(spec.headers)))
            return streamable_http_client(spec.url, http_client=http)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        errlog = stack.enter_context(_log_file(spec.stderr))
        params = StdioServerParameters(command=spec.command, args=list(spec.args),
                                       env=None if spec.env is None else dict(spec.env),
                                       cwd=spec.cwd)
        return stdio_client(params, errlog=errlog)


def _log_file(path: str | None) -> TextIO:
    """Where a stdio server's standard error goes (a real file: the process gets its fd)."""
    return open(path or os.devnull, "a", encoding="utf-8")  # the exit stack closes it
