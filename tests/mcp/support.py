"""Starting the test MCP server (tests/mcp/server.py) over stdio and over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from power_loop import AgentLoopConfig, LLMService, StatefulAgentLoop, Store
from power_loop.mcp import MCPServer

SERVER = Path(__file__).resolve().with_name("server.py")
WAIT = 60.0


def stdio_server(tmp: Path, name: str = "t", *, mark: Path | None = None,
                 **options: Any) -> MCPServer:
    """The test server over stdio; its calls are logged to ``tmp/calls.log``."""
    env = {"PL_MCP_LOG": str(tmp / "calls.log")}
    if mark is not None:
        env["PL_MCP_MARK"] = str(mark)
    return MCPServer.stdio(name, sys.executable, [str(SERVER), "stdio"], env=env,
                           stderr=tmp / "server.err", **options)


def calls(tmp: Path) -> list[str]:
    """The calls the server logged, in order."""
    path = tmp / "calls.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpServer:
    """The test server as a streamable HTTP process on 127.0.0.1."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, "PL_MCP_LOG": str(self.tmp / "calls.log")}
        with (self.tmp / "http.err").open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(SERVER), "http", str(self.port)],
                                         env=env, stdout=err, stderr=err)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the HTTP MCP server exited: "
                                   f"{(self.tmp / 'http.err').read_text()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the HTTP MCP server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(WAIT)
        self.proc = None

    def server(self, name: str = "h", **options: Any) -> MCPServer:
        return MCPServer.http(name, self.url, **options)


@contextmanager
def http_server(tmp: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_loop(store: Store, llm: LLMService, tools: list[Any],
              config: Mapping[str, Any] | None = None) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=llm, store=store, tools=tools,
                             config=AgentLoopConfig(**(config or {})))
