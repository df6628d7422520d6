"""The seam between the ``bash`` tool and whatever runs its commands.

The tool builds a :class:`ShellRequest`, hands it to a :class:`ShellBackend` and shows
the model the :class:`ShellResult`. :class:`~power_loop.shell.local.LocalShell` runs
commands on this machine; a container or sandbox runner is another implementation of
the same protocol (or a ``LocalShell`` whose ``wrapper`` puts each command in a jail,
see docs/shell.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

__all__ = ["ShellBackend", "ShellOutput", "ShellRequest", "ShellResult"]


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """One command to run.

    Attributes:
        command: The command line, as the model wrote it (run by a shell).
        env: Variables the call adds to the backend's environment:
            ``POWER_LOOP_IDEMPOTENCY_KEY`` (the same on every attempt of this call, in any
            process: a script can dedupe on it) and ``POWER_LOOP_ATTEMPT``.
    """

    command: str
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ShellOutput:
    """What a command wrote to one stream, kept within a cap.

    Output beyond the cap is read (so the command never blocks on a full pipe) and
    counted but not kept: the start (``head``) and the end (``tail``) are kept, the
    middle is cut.

    Attributes:
        head: The first bytes written.
        tail: The last bytes written, after ``head`` (empty when nothing was cut).
        size: How many bytes were written in all.
    """

    head: bytes = b""
    tail: bytes = b""
    size: int = 0

    @property
    def cut(self) -> int:
        """How many bytes were dropped from the middle."""
        return self.size - len(self.head) - len(self.tail)

    @property
    def data(self) -> bytes:
        """The kept bytes (all of them when nothing was cut)."""
        return self.head + self.tail


@dataclass(frozen=True, slots=True)
class ShellResult:
    """How a command ended.

    Attributes:
        exit_code: Its exit status; ``-N`` when signal ``N`` ended it (as ``subprocess``).
        stdout: What it wrote to standard output.
        stderr: What it wrote to standard error.
        timed_out: It ran past the backend's timeout and its process group was killed.
        notes: Anything else the model should know (output left unread, say).
    """

    exit_code: int
    stdout: ShellOutput = ShellOutput()
    stderr: ShellOutput = ShellOutput()
    timed_out: bool = False
    notes: tuple[str, ...] = ()


@runtime_checkable
class ShellBackend(Protocol):
    """Runs the ``bash`` tool's commands.

    ``run`` returns a :class:`ShellResult` for any command that started (whatever its
    exit status, timed out or not), raises :class:`~power_loop.errors.ToolError` with a
    message for the model when the command cannot start, and, when the calling task is
    cancelled, stops the command and everything it started before re-raising.

    Attributes:
        timeout: Seconds a command may run before it is killed. ``run`` returns within
            a few seconds more; the tool abandons a call that takes 15 seconds longer.
    """

    timeout: float

    async def run(self, request: ShellRequest) -> ShellResult:
        """Run ``request.command``; see the class docstring for the contract."""
        ...
