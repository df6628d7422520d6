"""The web example's processes, as the tests start, kill and read them.

Each server is ``python -m examples.web --role web|worker`` on a free port of
127.0.0.1, on the test's DSN and table prefix, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.durability.harness import REPO, WAIT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def example_env() -> dict[str, str]:
    """The environment of a child: this worktree's power_loop, never a real model."""
    env = {k: v for k, v in os.environ.items() if k != "POWER_LOOP_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Process:
    """One process of the example: the web server (``role="web"``) or a worker."""

    def __init__(self, role: str, dsn: str, prefix: str, log: Path, *,
                 port: int | None = None, options: Sequence[str] = ()) -> None:
        self.role, self.dsn, self.prefix, self.log_path = role, dsn, prefix, log
        self.port = port if port is not None else free_port()
        self.options = list(options)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "examples.web", "--role", self.role, "--dsn", self.dsn,
                 "--prefix", self.prefix, "--port", str(self.port), *self.options],
                cwd=REPO, env=example_env(), stdout=log, stderr=subprocess.STDOUT)
        if self.role == "web":
            self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the web server exited {self.proc.returncode}:\n"
                                     f"{self.log()}")
            try:
                if httpx.get(self.url + "/static/style.css", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the web server did not start:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: nothing runs after it, not even the lifespan's exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(WAIT) == -signal.SIGKILL

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; SIGKILL if it will not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass(frozen=True, slots=True)
class Frame:
    """One server-sent event."""

    event: str
    data: dict[str, Any]
    id: str | None = None


def parse_frames(lines: Iterable[str]) -> list[Frame]:
    """The events of an event stream (comments and ``retry:`` lines skipped)."""
    frames: list[Frame] = []
    event, data, event_id = "message", "", None
    for line in lines:
        if line == "":
            if data:
                frames.append(Frame(event, json.loads(data), event_id))
            event, data, event_id = "message", "", None
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            event_id = line[4:]
    return frames


def frames_of(response: httpx.Response) -> list[Frame]:
    return parse_frames(response.text.split("\n"))


def live(frames: Sequence[Frame]) -> list[dict[str, Any]]:
    """The live events of a send's stream."""
    return [f.data for f in frames if f.event == "live"]


def finished(frames: Sequence[Frame]) -> dict[str, Any]:
    """The ``SendFinished`` event of a stream (there is exactly one)."""
    (event,) = [e for e in live(frames) if e["type"] == "SendFinished"]
    return event
