"""A real MCP server for the tests, built with the official SDK.

Run as ``python -m tests.mcp.server stdio`` or ``python -m tests.mcp.server http PORT``.
``PL_MCP_LOG`` names a file each call appends a line to (how a test counts real calls);
``PL_MCP_MARK`` names a directory where the ``wait_*`` tools leave a file named after
their tag (holding the server's pid) when they start, then wait; a call whose file is
already there answers at once (how a crash test knows a call is in flight, and how the
call is quick once repeated).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import (
    BlobResourceContents,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
)

server = MCPServer("power-loop-test")
READ_ONLY = ToolAnnotations(read_only_hint=True)


def _log(line: str) -> None:
    path = os.environ.get("PL_MCP_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@server.tool(annotations=READ_ONLY)
def echo(text: str) -> str:
    """Say the text back."""
    _log(f"echo {text}")
    return text


@server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=False))
def put(key: str, value: int) -> str:
    """Store a value under a key."""
    _log(f"put {key} {value}")
    return f"stored {key}"


@server.tool(annotations=ToolAnnotations(destructive_hint=True, read_only_hint=False))
def wipe(reason: str) -> str:
    """Delete everything."""
    _log(f"wipe {reason}")
    return "wiped"


@server.tool()
def append(text: str) -> str:
    """Append a line somewhere (no annotations: unsafe to repeat)."""
    _log(f"append {text}")
    return "appended"


@server.tool(annotations=READ_ONLY)
def fail(message: str) -> str:
    """Always fails."""
    raise ValueError(message)


@server.tool(annotations=READ_ONLY)
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool(annotations=READ_ONLY)
def die() -> str:
    """Kill this server in the middle of the call."""
    _log("die")
    os._exit(3)


@server.tool(annotations=READ_ONLY)
def shapes(kind: str, size: int = 10) -> list[TextContent | ImageContent | EmbeddedResource]:
    """Content of several kinds."""
    if kind == "image":
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * size).decode()
        return [TextContent(type="text", text="a picture:"),
                ImageContent(type="image", data=png, mime_type="image/png")]
    if kind == "resource":
        return [EmbeddedResource(type="resource", resource=TextResourceContents(
                    uri="file:///notes.txt", text="the notes", mime_type="text/plain")),
                EmbeddedResource(type="resource", resource=BlobResourceContents(
                    uri="file:///blob.bin", blob=base64.b64encode(b"xyz").decode(),
                    mime_type="application/octet-stream"))]
    return [TextContent(type="text", text="x" * size)]


@server.tool(annotations=READ_ONLY)
async def wait_read(tag: str) -> str:
    """Mark the call as started, then wait a long time (read-only)."""
    return await _wait("wait_read", tag)


@server.tool()
async def wait_write(tag: str) -> str:
    """Mark the call as started, then wait a long time (unannotated)."""
    return await _wait("wait_write", tag)


async def _wait(name: str, tag: str) -> str:
    _log(f"{name} {tag}")
    marks = os.environ.get("PL_MCP_MARK")
    if marks and not (Path(marks) / tag).exists():
        (Path(marks) / tag).write_text(str(os.getpid()))
        await asyncio.sleep(600)
    return f"{name} done {tag}"


@server.tool(annotations=READ_ONLY)
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool(annotations=READ_ONLY)
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call."""
    headers = ctx.headers or {}
    return str(headers.get(name.lower(), "(none)"))


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool called ``name`` and tell the client the list changed."""
    def added(text: str) -> str:
        return text

    server.add_tool(added, name=name, description=f"Added at run time: {name}.",
                    annotations=READ_ONLY)
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def main() -> None:
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]),
                   json_response=False)


if __name__ == "__main__":
    main()
