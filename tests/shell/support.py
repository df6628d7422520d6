"""Shells whose every process carries a tag, and a way to find the ones still running.

Every command run by a :func:`tagged_shell` inherits ``SHELL_TEST_TAG``; so does
everything it starts. A process still running with the tag after a call ended is an
orphan the backend left behind (zombies are dead: they are not counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from conformance.waiting import eventually
from power_loop import LocalShell, ToolCallPart, ToolContext, ToolRegistry, bash_tool
from power_loop.tools.registry import ToolLimits, ToolOutcome

TAG_VAR = "SHELL_TEST_TAG"


def tagged_shell(cwd: Path, **options: Any) -> tuple[LocalShell, str]:
    """A cheap :class:`LocalShell` (short timeout and grace) and the tag its processes carry."""
    tag = uuid.uuid4().hex
    options.setdefault("timeout", 5.0)
    options.setdefault("kill_grace", 0.2)
    env = {TAG_VAR: tag, **options.pop("env", {})}
    return LocalShell(cwd=cwd, env=env, **options), tag


def running_with(tag: str) -> list[int]:
    """The pids of live (not zombie) processes whose environment holds the tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        state = stat[stat.rindex(")") + 2:].split(" ", 1)[0]
        if needle in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry))
    return found


async def wait_all_gone(tag: str, within: float = 10.0) -> list[int]:
    """Wait until no process carries the tag (a SIGKILLed process takes a moment to
    die); the ones still running at ``within`` seconds, for the assertion."""

    async def gone() -> bool:
        return not running_with(tag)

    with contextlib.suppress(AssertionError):
        await eventually(gone, f"the processes tagged {tag} to end", within=within)
    return running_with(tag)


async def wait_running(tag: str, at_least: int) -> None:
    """Wait until ``at_least`` processes carry the tag (forks and execs take a moment)."""

    async def enough() -> bool:
        return len(running_with(tag)) >= at_least

    await eventually(enough, f"{at_least} processes tagged {tag}", within=10.0)


async def wait_for_file(path: Path, within: float = 10.0) -> str:
    """The text of ``path`` once it exists and ends with a newline."""

    async def written() -> bool:
        return _finished_text(path) is not None

    await eventually(written, f"{path} to be written", within=within)
    return _finished_text(path) or ""


def _finished_text(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text if text.endswith("\n") else None


def context(call_id: str = "c1", attempt: int = 1) -> ToolContext:
    return ToolContext("s1", 0, call_id, "bash", ToolContext.key_for("s1", 0, call_id),
                       attempt)


async def call_bash(shell: LocalShell, arguments: str | dict[str, Any],
                    call_id: str = "c1") -> ToolOutcome:
    """One call of the ``bash`` tool through the registry, as the loop makes it."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    registry = ToolRegistry([bash_tool(shell)])
    return await registry.run(ToolCallPart(call_id, "bash", raw), context(call_id),
                              ToolLimits())
