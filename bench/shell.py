"""``python -m bench shell``: what a ``bash`` tool call costs beside a bare subprocess.

Per command, sequentially, ``--n`` times each, in a temporary directory:

* ``floor``: ``subprocess.run([bash, -c, CMD], capture_output=True)``, the least a
  process-running tool can do (fork, exec, read both pipes, wait);
* ``local``: ``LocalShell.run`` (a new session, pidfd watch, capped readers on the event
  loop, the group killed at the end);
* ``tool``: the ``bash`` tool through ``ToolRegistry.run`` (argument validation, the key
  in the environment, the rendered result), as a send runs it.

Commands: ``true`` (start-up cost) and ``head -c 10000000 /dev/zero`` (10 MB read
through the 20,000-byte cap). Figures are medians over ``--repeat`` rounds, in wall and
in this process's CPU milliseconds per command (the command's own CPU is not counted;
CPU is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

from bench.machine import machine_facts
from power_loop import LocalShell, ShellRequest, ToolCallPart, ToolContext, ToolRegistry, bash_tool
from power_loop.tools.registry import ToolLimits

COMMANDS = {"true": "true", "10MB": "head -c 10000000 /dev/zero"}


async def _measure(run: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await run()
    return ((time.perf_counter() - wall) * 1e3 / n, (time.process_time() - cpu) * 1e3 / n)


def _bare(command: str, workdir: str) -> subprocess.CompletedProcess[bytes]:
    """The floor: blocking, which a loop could not afford, and the least work there is."""
    return subprocess.run(["/bin/bash", "-c", command], capture_output=True, cwd=workdir,
                          check=False)


async def _round(command: str, n: int, workdir: str) -> dict[str, tuple[float, float]]:
    shell = LocalShell(cwd=workdir, timeout=60)
    registry = ToolRegistry([bash_tool(shell)])
    call = ToolCallPart("c1", "bash", f'{{"command": "{command}"}}')
    context = ToolContext("s", 0, "c1", "bash", "s:0:c1")

    async def floor() -> object:
        return _bare(command, workdir)

    async def local() -> object:
        return await shell.run(ShellRequest(command))

    async def through_tool() -> object:
        return await registry.run(call, context, ToolLimits())

    return {"floor": await _measure(floor, n), "local": await _measure(local, n),
            "tool": await _measure(through_tool, n)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench shell", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="commands per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are shown)")
    options = parser.parse_args(argv)
    for name, value in machine_facts().items():
        print(f"{name:>10}: {value}")
    print("(the machine may be shared: compare CPU rather than wall figures)\n")
    print(f"{'command':<8} {'path':<6} {'wall ms':>9} {'cpu ms':>9}   vs floor (cpu)")
    with tempfile.TemporaryDirectory() as workdir:
        for label, command in COMMANDS.items():
            rounds = [asyncio.run(_round(command, options.n, workdir))
                      for _ in range(options.repeat)]
            floor_cpu = statistics.median(r["floor"][1] for r in rounds)
            for path in ("floor", "local", "tool"):
                wall = statistics.median(r[path][0] for r in rounds)
                cpu = statistics.median(r[path][1] for r in rounds)
                print(f"{label:<8} {path:<6} {wall:>9.2f} {cpu:>9.2f}   "
                      f"{cpu / floor_cpu if floor_cpu else float('nan'):.2f}x")
    return 0
