"""Running one command in a process group of its own, and leaving nothing of it behind.

The command starts a new session (so a new process group whose id is its pid) with
stdin closed. When it exits, runs past its timeout or the calling task is cancelled,
the whole group is stopped: SIGTERM, then SIGKILL after a grace, and always a final
SIGKILL for what it left running in the background. The leader is reaped only after
that last signal, so the group's id cannot have been reused by then.

Processes that leave the group (``setsid``, a double fork into a new session) escape:
the local backend is not a sandbox (docs/shell.md says what a jail adds).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from power_loop.errors import ToolError
from power_loop.shell.backend import ShellResult
from power_loop.shell.capture import PipeReader

DRAIN_SECONDS = 2.0
"""How long output is still read after the group was killed (a process that escaped
the group may hold the pipe open forever)."""

_REAP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a command may run and how much of its output is kept."""

    timeout: float
    kill_grace: float
    max_output_bytes: int


@dataclass(slots=True)
class Started:
    """A started command: its process and the read ends of its stdout and stderr pipes."""

    process: subprocess.Popen[bytes]
    stdout: int
    stderr: int


def start(argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> Started:
    """Start ``argv`` in a new session, or raise :class:`ToolError` saying why it could not."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        # Popen forks and execs synchronously: no await between the start and the
        # supervisor's try block, so a cancellation cannot orphan the process.
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd,
            env=dict(env), start_new_session=True, close_fds=True)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        os.close(out_r)
        os.close(err_r)
        raise ToolError(f"Error: the command could not be started: {exc}. It did not run."
                        ) from exc
    finally:
        os.close(out_w)
        os.close(err_w)
    return Started(process, out_r, err_r)


async def supervise(started: Started, limits: Limits) -> ShellResult:
    """Wait for the command, capture its output, and kill its group; see the module doc."""
    loop = asyncio.get_running_loop()
    process = started.process
    group = process.pid  # start_new_session: the leader's pid is the group's id
    readers: list[PipeReader] = []
    exited: _ExitWatch | None = None
    notes: list[str] = []
    timed_out = False
    try:
        for fd in (started.stdout, started.stderr):
            readers.append(PipeReader(fd, limits.max_output_bytes, loop))
        exited = _ExitWatch(process.pid, loop)
        if not await _within(exited.done, limits.timeout):
            timed_out = True
            await _stop(group, exited, limits.kill_grace)
        _signal(group, signal.SIGKILL)  # what it left running in the background
        drain_until = loop.time() + DRAIN_SECONDS
        for reader in readers:
            if not await _within(reader.done, max(0.0, drain_until - loop.time())):
                notes.append("output written after the command ended was not read: a "
                              "process outside its process group kept the pipe open")
                break
    except BaseException:
        try:
            if exited is not None and not exited.done.done():
                await _stop(group, exited, limits.kill_grace)
        finally:
            _signal(group, signal.SIGKILL)
            _reap(process)
        raise
    finally:
        if exited is not None:
            exited.close()
        for fd in (started.stdout, started.stderr)[len(readers):]:
            os.close(fd)  # never handed to a reader
        for reader in readers:
            reader.close()
    _reap(process)
    code = process.returncode
    if code is None:  # stuck in the kernel, SIGKILL pending
        notes.append("the command did not end within moments of SIGKILL")
        code = -signal.SIGKILL
    return ShellResult(exit_code=code, stdout=readers[0].buffer.output(),
                       stderr=readers[1].buffer.output(), timed_out=timed_out,
                       notes=tuple(notes))


class _ExitWatch:
    """``done`` is set when the process exits (a pidfd turns readable); not reaped."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._fd = os.pidfd_open(pid)
        loop.add_reader(self._fd, self._exited)

    def _exited(self) -> None:
        self._loop.remove_reader(self._fd)
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


async def _stop(group: int, exited: _ExitWatch, grace: float) -> None:
    """SIGTERM the group and give its leader ``grace`` seconds to exit."""
    _signal(group, signal.SIGTERM)
    await _within(exited.done, grace)


async def _within(future: asyncio.Future[None], seconds: float) -> bool:
    """Whether ``future`` is done within ``seconds``; it is never cancelled by this."""
    done, _ = await asyncio.wait({future}, timeout=seconds)
    return bool(done)


def _signal(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass  # nothing left in the group


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        # Blocking, but only after SIGKILL: the leader is gone within moments.
        process.wait(timeout=_REAP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
