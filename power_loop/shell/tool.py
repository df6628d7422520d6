"""``bash_tool``: the opt-in tool that lets the model run shell commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from power_loop.errors import InvalidArgumentError
from power_loop.shell.backend import ShellBackend, ShellRequest
from power_loop.shell.rendering import render_result
from power_loop.tools.context import ToolContext
from power_loop.tools.tool import Tool, make_tool

__all__ = ["IDEMPOTENCY_KEY_VAR", "bash_tool"]

IDEMPOTENCY_KEY_VAR = "POWER_LOOP_IDEMPOTENCY_KEY"
"""The variable holding the call's idempotency key in the command's environment."""

ATTEMPT_VAR = "POWER_LOOP_ATTEMPT"

TIMEOUT_SLACK = 15.0
"""Seconds past the backend's timeout after which the tool call is abandoned."""

_DESCRIPTION = (
    "Run a shell command and get its exit code, stdout and stderr. Commands run "
    "non-interactively (stdin is closed) and are killed after {timeout:g} seconds, with "
    "everything they started; long output is cut in the middle.")


def bash_tool(backend: ShellBackend, *, name: str = "bash", description: str | None = None,
              safe_to_repeat: bool = False,
              requires_approval: bool | Callable[[Mapping[str, Any]], bool] = False,
              approval_expires: float | None = None) -> Tool:
    """The ``bash`` tool: the model's commands run by ``backend``.

    The result shows the exit code, stdout, stderr, whether the command timed out and
    what was cut; a command that cannot start is an error result. Each command's
    environment holds ``POWER_LOOP_IDEMPOTENCY_KEY`` (the same on every attempt of the
    call, in any process) and ``POWER_LOOP_ATTEMPT``.

    Args:
        backend: What runs the commands (:class:`~power_loop.shell.LocalShell`, or your
            own :class:`~power_loop.shell.ShellBackend`).
        name: The tool's name.
        description: What the model reads about it (a default mentions the timeout).
        safe_to_repeat: ``False`` by default: a command whose outcome a crash lost is
            not run again on resume, the model is told the outcome is unknown. Say
            ``True`` only for a backend whose commands are harmless to repeat.
        requires_approval: ``True``, or a function of the call's arguments (``command``)
            saying whether a person must approve it (docs/human-in-the-loop.md).
        approval_expires: Seconds after which an unanswered approval is a rejection.
    """
    timeout = getattr(backend, "timeout", None)
    if not isinstance(backend, ShellBackend) or isinstance(timeout, bool) or not isinstance(
            timeout, (int, float)) or not timeout > 0:
        raise InvalidArgumentError(
            f"bash_tool needs a ShellBackend (an async run(request) and a timeout in "
            f"seconds above 0), not {backend!r}")

    async def bash(command: str, ctx: ToolContext) -> str:
        """Run a shell command.

        Args:
            command: The command line, run by the shell (pipes, redirections and `&&`
                work).
        """
        request = ShellRequest(command, {IDEMPOTENCY_KEY_VAR: ctx.idempotency_key,
                                         ATTEMPT_VAR: str(ctx.attempt)})
        return render_result(await backend.run(request), float(timeout))

    return make_tool(
        bash, name=name, description=description or _DESCRIPTION.format(timeout=timeout),
        safe_to_repeat=safe_to_repeat, timeout=float(timeout) + TIMEOUT_SLACK,
        max_output_chars=_max_chars(backend), requires_approval=requires_approval,
        approval_expires=approval_expires)


def _max_chars(backend: ShellBackend) -> int | None:
    """Room for both streams' kept bytes (escapes aside) and the headers; ``None``: the
    loop's default, for a backend that does not say how much it keeps."""
    kept = getattr(backend, "max_output_bytes", None)
    if isinstance(kept, int) and not isinstance(kept, bool) and kept > 0:
        return 2 * kept + 2_000
    return None
