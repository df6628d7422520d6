"""``LocalShell``: the ``bash`` tool's commands run on this machine, bounded."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from power_loop.errors import InvalidArgumentError, ToolError
from power_loop.shell.backend import ShellRequest, ShellResult
from power_loop.shell.process import Limits, start, supervise

__all__ = ["DEFAULT_ENV_ALLOW", "LocalShell"]

DEFAULT_ENV_ALLOW = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "PATH", "TZ")
"""The variables a command inherits from this process unless told otherwise."""

RESERVED_PREFIX = "POWER_LOOP_"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}\Z")
_MAX_ENV_VALUE = 32_768
_MAX_TIMEOUT = 86_400.0


class LocalShell:
    """Runs each command with ``shell -c`` in a process group of its own.

    What it bounds: the working directory, the time (the whole process group is sent
    SIGTERM at ``timeout``, SIGKILL ``kill_grace`` seconds later, and whatever the
    command left running in the background is killed when it ends), the output kept
    (``max_output_bytes`` of each stream; the middle of longer output is cut), and the
    environment (only ``env_allow`` is inherited, ``env`` is added; nothing else).
    stdin is closed. It is not a sandbox: see docs/shell.md for what it does not stop.

    Args:
        cwd: The directory commands run in.
        timeout: Seconds a command may run.
        max_output_bytes: Bytes kept of stdout, and as many of stderr.
        env_allow: Names of variables inherited from this process when it has them.
        env: Variables set for every command (they win over inherited ones).
        shell: The shell that runs the command line (``shell -c command``).
        kill_grace: Seconds between SIGTERM and SIGKILL.
        wrapper: Words put before ``shell -c command``: the seam for a jail or a
            container runner that takes a command line (``unshare ...``,
            ``bwrap ...``, ``docker exec -i box``). The group that is killed is the
            wrapper's.

    Raises:
        InvalidArgumentError: A bound out of range, or a variable name or value that
            cannot be passed (names are letters, digits and ``_``, not starting with a
            digit nor with ``POWER_LOOP_``; values hold no NUL).

    Example::

        shell = LocalShell(cwd="/srv/checkout", timeout=30, env={"CI": "1"})
        loop = StatefulAgentLoop(llm=llm, store=store, tools=[bash_tool(shell)])
    """

    def __init__(self, *, cwd: str | os.PathLike[str], timeout: float = 60.0,
                 max_output_bytes: int = 20_000,
                 env_allow: Iterable[str] = DEFAULT_ENV_ALLOW,
                 env: Mapping[str, str] | None = None, shell: str = "/bin/bash",
                 kill_grace: float = 0.5, wrapper: Sequence[str] = ()) -> None:
        self.cwd = os.fspath(cwd)
        self.timeout = _seconds("timeout", timeout, _MAX_TIMEOUT)
        self.kill_grace = _seconds("kill_grace", kill_grace, 60.0)
        if (isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int)
                or not 200 <= max_output_bytes <= 10_000_000):
            raise InvalidArgumentError(
                f"LocalShell: max_output_bytes must be an int from 200 to 10,000,000, not "
                f"{max_output_bytes!r}")
        if isinstance(env_allow, str):
            raise InvalidArgumentError(
                "LocalShell: env_allow is a list of names, not one string")
        self.env_allow = tuple(sorted({_name(n) for n in env_allow}))
        self.env = MappingProxyType({_name(k): _value(k, v) for k, v in (env or {}).items()})
        self.max_output_bytes = max_output_bytes
        self.shell = _word("shell", shell)
        self.wrapper = tuple(_word("wrapper", w) for w in wrapper)

    def environment(self, extra: Mapping[str, str] = MappingProxyType({})) -> dict[str, str]:
        """The whole environment a command gets: allowed, then ``env``, then ``extra``."""
        found = {n: os.environ[n] for n in self.env_allow if n in os.environ}
        return {**found, **self.env, **extra}

    async def run(self, request: ShellRequest) -> ShellResult:
        """Run ``request.command``; see :class:`~power_loop.shell.ShellBackend`."""
        if "\0" in request.command:
            raise ToolError("Error: the command contains a NUL character, which no shell "
                            "command can hold. It did not run.")
        argv = [*self.wrapper, self.shell, "-c", request.command]
        started = start(argv, cwd=self.cwd, env=self.environment(request.env))
        return await supervise(started, Limits(self.timeout, self.kill_grace,
                                               self.max_output_bytes))

    def __repr__(self) -> str:
        return (f"LocalShell(cwd={self.cwd!r}, timeout={self.timeout:g}, "
                f"env_allow={list(self.env_allow)!r}, wrapper={list(self.wrapper)!r})")


def _seconds(what: str, value: object, most: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0 < value <= most):
        raise InvalidArgumentError(
            f"LocalShell: {what} must be seconds above 0 and at most {most:g}, not {value!r}")
    return float(value)


def _name(name: object) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise InvalidArgumentError(
            f"LocalShell: environment variable name {name!r} is not allowed: use letters, "
            "digits and '_', not starting with a digit (at most 256)")
    if name.upper().startswith(RESERVED_PREFIX):
        raise InvalidArgumentError(
            f"LocalShell: environment variable {name!r} is reserved: power_loop sets the "
            f"{RESERVED_PREFIX}* variables of each call")
    return name


def _value(name: str, value: object) -> str:
    if not isinstance(value, str) or "\0" in value or len(value) > _MAX_ENV_VALUE:
        raise InvalidArgumentError(
            f"LocalShell: the value of environment variable {name!r} must be text without "
            f"NUL, at most {_MAX_ENV_VALUE:,} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"LocalShell: the value of environment variable {name!r} is not valid "
            "Unicode (a lone surrogate)") from exc
    return value


def _word(what: str, word: object) -> str:
    if not isinstance(word, str) or not word or "\0" in word:
        raise InvalidArgumentError(
            f"LocalShell: {what} must be non-empty text without NUL, not {word!r}")
    return word
