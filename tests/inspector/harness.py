"""The inspector as a person meets it: ``power-loop inspect`` in a process of its own,
and a store the test fills through a real :class:`StatefulAgentLoop`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from power_loop.store import Store
from power_loop.store.schema import TableNames
from tests.cli_support import REPO, cli_env, interruptible

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Running:
    """A running inspector: where it listens, and its process."""

    url: str
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]


@contextmanager
def inspector(dsn: str, prefix: str, *args: str, env: dict[str, str] | None = None,
              ) -> Iterator[Running]:
    """``power-loop inspect`` on a free port, ready to answer; stopped (SIGINT) after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "power_loop.cli.main", "inspect", "--dsn", dsn, "--prefix",
         prefix, "--port", str(port), *args],
        cwd=REPO, env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=interruptible)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                _, err = process.communicate()
                raise AssertionError(f"the inspector exited ({process.returncode}): "
                                     f"{err.decode(errors='replace')}")
            try:
                if httpx.get(f"{url}/login", timeout=5.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the inspector did not answer in time")
            time.sleep(0.1)
        yield Running(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def table_contents(store: Store) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the store, sorted: what "nothing was written" means."""
    names = TableNames(store._database.dialect, store.table_prefix)
    contents: dict[str, list[tuple[object, ...]]] = {}
    for table in ("sessions", "messages", "sends", "projections", "folds", "notes", "timers",
                  "waits", "session_links", "workflows", "workflow_steps",
                  "workflow_signals"):
        async with store._database.transaction(write=False) as conn:
            rows = await conn.fetch(f"SELECT * FROM {getattr(names, table)}", [])
        contents[table] = sorted((tuple(r) for r in rows), key=repr)
    return contents
