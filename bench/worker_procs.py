"""``power-loop worker`` processes for the worker benchmark, and what they report.

Each process runs ``python -m power_loop.cli.main worker --app bench.worker_app:make_loop``
with the DSN in ``$POWER_LOOP_DSN`` (so no password shows in ``ps``), stdout discarded and
stderr kept in a file of the group's directory. :mod:`bench.worker_app` writes the
snapshots read here (statements by leading keyword and CPU seconds since the process
started); the ``worker stopped: WorkerStats(...)`` line the command prints on exit gives
each process's counts.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.worker_app import DIR_ENV

REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 120.0
SNAPSHOT_SECONDS = 30.0
STOP_SECONDS = 60.0
_STATS = re.compile(r"worker stopped: WorkerStats\((.*)\)")
_FIELD = re.compile(r"(\w+)=(\d+)")


@dataclass
class Snapshot:
    """Statements (by leading keyword) and CPU seconds, summed over the processes."""

    statements: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0

    def __sub__(self, other: Snapshot) -> Snapshot:
        statements = Counter(self.statements)
        statements.subtract(other.statements)
        return Snapshot(statements, self.cpu_seconds - other.cpu_seconds)


def machine_jiffies() -> tuple[int, int] | None:
    """Busy and total CPU time of the whole machine so far, in jiffies (Linux only)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_between(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    """The machine's busy share of its CPU time between two readings (NaN if unknown)."""
    if before is None or after is None or after[1] <= before[1]:
        return math.nan
    return (after[0] - before[0]) / (after[1] - before[1])


class WorkerFailed(RuntimeError):
    """A worker process exited early or did not answer."""


@asynccontextmanager
async def time_limit(seconds: float, what: str) -> AsyncIterator[None]:
    """``asyncio.timeout`` raising :class:`WorkerFailed` saying ``what`` took too long."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise WorkerFailed(f"{what}: not done after {seconds:g}s") from None


def _stderr_file(path: Path) -> IO[bytes]:
    return path.open("wb")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _load(path: Path) -> Snapshot | None:
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    return Snapshot(Counter(body["statements"]), float(body["cpu_seconds"]))


class WorkerGroup:
    """``count`` worker processes on the store at ``location`` under ``prefix``."""

    def __init__(self, count: int, location: str, prefix: str, *, poll: float,
                 concurrency: int, directory: Path) -> None:
        self.count, self.directory = count, directory
        self.command = [
            sys.executable, "-m", "power_loop.cli.main", "worker", "--prefix", prefix,
            "--app", "bench.worker_app:make_loop", "--poll", f"{poll:g}",
            "--concurrency", str(concurrency), "--schema", "verify", "--quiet"]
        self.env = dict(os.environ, POWER_LOOP_DSN=location, **{DIR_ENV: str(directory)})
        self.processes: list[asyncio.subprocess.Process] = []
        self._taken = 0

    async def start(self) -> None:
        """Start the processes and wait until each has built its loop."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            err = _stderr_file(self.directory / f"stderr-{i}.txt")
            try:
                self.processes.append(await asyncio.create_subprocess_exec(
                    *self.command, cwd=REPO, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=err))
            finally:
                err.close()  # the child holds its own descriptor
        async with time_limit(STARTUP_SECONDS, "starting the workers"):
            await self._collect()

    async def snapshot(self) -> Snapshot:
        """Every process's counts now, summed (SIGUSR1, then wait for the files)."""
        for process in self.processes:
            process.send_signal(signal.SIGUSR1)
        async with time_limit(SNAPSHOT_SECONDS, f"snapshot #{self._taken} of the workers"):
            return await self._collect()

    async def _collect(self) -> Snapshot:
        paths = [self.directory / f"snap-{p.pid}-{self._taken}.json" for p in self.processes]
        while True:
            loaded = [_load(path) for path in paths]
            if all(s is not None for s in loaded):
                break
            self.check()
            await asyncio.sleep(0.01)
        self._taken += 1
        total = Snapshot()
        for snap in loaded:
            assert snap is not None
            total.statements.update(snap.statements)
            total.cpu_seconds += snap.cpu_seconds
        return total

    def check(self) -> None:
        """Raise :class:`WorkerFailed` if a process has exited."""
        for i, process in enumerate(self.processes):
            if process.returncode is not None:
                tail = _read(self.directory / f"stderr-{i}.txt").strip().splitlines()[-3:]
                raise WorkerFailed(f"worker {i} exited with status {process.returncode}: "
                                   + " | ".join(tail))

    async def stop(self) -> list[dict[str, int]]:
        """SIGTERM (drain, then exit); each process's ``WorkerStats`` as a dict."""
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        try:
            async with time_limit(STOP_SECONDS, "stopping the workers"):
                for process in self.processes:
                    await process.wait()
        finally:
            await self.kill()
        stats = []
        for i in range(len(self.processes)):
            found = _STATS.search(_read(self.directory / f"stderr-{i}.txt"))
            stats.append({} if found is None else
                         {k: int(v) for k, v in _FIELD.findall(found.group(1))})
        return stats

    async def kill(self) -> None:
        """Kill whatever is still running (after a failure)."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
