"""``python -m bench hooks``: what hooks cost a send, beside no hooks and the driver floor.

On SQLite, with ``ScriptedLLM`` as the model, ``--n`` sequential sends on one session of
a warm loop for each configuration of hooks:

* ``none``: ``AgentLoopConfig()``; ``empty``: ``hooks=[]``; ``noop``: one ``Hooks()``
  that overrides nothing (all three run the same code: the loop keeps no hook chain);
* ``observe``: one hook overriding all eight points, each returning ``None``;
  ``observe_x3``: three of them.

Beside them the floor (:mod:`bench.send_floor`): the same rows in the same transactions
through the raw driver. Workloads: ``no_tool`` (the model answers) and ``async_tool``
(one trivial tool call, then the answer: the tool points are reached too). Rounds
rotate which configuration goes first; figures are medians over ``--repeat`` rounds, in
wall and CPU microseconds per send (CPU is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.loop import TEXT, lookup, shape_of, timed_run
from bench.loop import make_loop as bench_loop
from bench.machine import machine_facts
from bench.send_floor import SendFloor, SendShape, open_send_floor
from power_loop import AgentLoopConfig, Hooks, StatefulAgentLoop, Store, open_store, tool
from power_loop.testing import fresh_prefix


class Observer(Hooks):
    """Overrides every point; changes nothing."""

    async def on_send_start(self, ctx: Any, text: str) -> None:
        return None

    async def on_send_end(self, ctx: Any, result: Any) -> None:
        return None

    async def on_model_request(self, ctx: Any, request: Any) -> None:
        return None

    async def on_model_response(self, ctx: Any, request: Any, response: Any) -> None:
        return None

    async def on_tool_start(self, ctx: Any, call: Any) -> None:
        return None

    async def on_tool_end(self, ctx: Any, call: Any, result: Any) -> None:
        return None

    async def on_fold_start(self, job: Any) -> None:
        return None

    async def on_fold_end(self, job: Any, outcome: Any) -> None:
        return None


CONFIGS: dict[str, Callable[[], AgentLoopConfig | None]] = {
    "none": lambda: None,
    "empty": lambda: AgentLoopConfig(hooks=[]),
    "noop": lambda: AgentLoopConfig(hooks=[Hooks()]),
    "observe": lambda: AgentLoopConfig(hooks=[Observer()]),
    "observe_x3": lambda: AgentLoopConfig(hooks=[Observer(), Observer(), Observer()]),
}
WORKLOADS = ("no_tool", "async_tool")


def make_loop(workload: str, store: Store, config: AgentLoopConfig | None) -> StatefulAgentLoop:
    loop = bench_loop(workload, store)  # the loop bench's model and tools
    if config is None:
        return loop
    tools = [tool(lookup)] if workload == "async_tool" else []
    return StatefulAgentLoop(llm=loop._llm, store=store, tools=tools, config=config)


async def sender(loop: StatefulAgentLoop) -> Callable[[], Awaitable[object]]:
    sid = await loop.new_session()

    async def send() -> object:
        return await loop.send(TEXT, sid)

    await send()  # untimed: the session is cached from here on
    return send


async def floor_sender(floor: SendFloor, shape: SendShape) -> Callable[[], Awaitable[object]]:
    sid = await floor.new_session()

    async def send() -> object:
        await floor.send(sid, shape)
        return None

    await send()
    return send


async def run(n: int, repeat: int, workdir: Path) -> None:
    store = await open_store(str(workdir / "hooks.db"), table_prefix=fresh_prefix())
    floor = await open_send_floor("sqlite", str(workdir / "floor.db"), fresh_prefix())
    try:
        print(f"machine: {machine_facts()}  (shared with other jobs: prefer the CPU column)")
        print(f"{n} sends per round, medians over {repeat} rounds, SQLite\n")
        for workload in WORKLOADS:
            probe = make_loop(workload, store, None)
            sid = await probe.new_session()
            await probe.send(TEXT, sid)
            shape = await shape_of(store, sid)
            loops = {name: make_loop(workload, store, make()) for name, make in CONFIGS.items()}
            names = [*loops, "floor"]
            walls: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(repeat):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    send = (await floor_sender(floor, shape) if name == "floor"
                            else await sender(loops[name]))
                    wall, cpu = await timed_run(send, n)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            base = statistics.median(cpus["none"])
            print(f"{workload}: {'hooks':<11} {'wall us/send':>13} {'CPU us/send':>12} "
                  f"{'CPU vs none':>12}")
            for name in names:
                cpu = statistics.median(cpus[name])
                delta = "" if name in ("none", "floor") else f"{(cpu - base) / base:+.1%}"
                print(f"{'':<{len(workload) + 2}}{name:<11} {statistics.median(walls[name]):>13.0f}"
                      f" {cpu:>12.0f} {delta:>12}")
            print()
    finally:
        await floor.close()
        await store.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="sends per round")
    parser.add_argument("--repeat", type=int, default=9, help="rounds")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-hooks-") as workdir:
        asyncio.run(run(opts.n, opts.repeat, Path(workdir)))
    return 0
