"""``python -m bench workflow``: what a workflow step costs, and what a resume costs.

On SQLite, with ``ScriptedLLM`` as every leaf's model:

* a ``foreach`` of ``--n`` items (one leaf each, one at a time): wall and CPU per step,
  beside a bare send on a new session (what a leaf is: a child session and one send)
  and the raw-driver floor of that send; the journal's bytes per step at n/10 and n
  (linear: one row per step);
* resuming that foreach stopped at item ``0.9 n`` (the executor 'dies' there): the time
  until the first unfinished item starts (reading the journal's rows), and per item
  after, beside a resume stopped at item ``0.1 n``;
* a 10-way ``parallel``: wall and CPU per workflow, beside 10 bare sends one by one.

Figures are medians over ``--repeat`` rounds; the machine is shared: prefer CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.loop import shape_of
from bench.machine import machine_facts
from bench.send_floor import SendFloor, SendShape, open_send_floor
from power_loop import (
    AgentLoopConfig,
    AgentSpec,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    WorkflowBusyError,
    open_store,
    reply,
)
from power_loop.testing import fresh_prefix
from power_loop.workflows import InProcessLauncher, use_launcher


class Stop(BaseException):
    """The executor 'dies' here (nothing catches it, nothing is released)."""


class StopAt:
    """Runs leaves until the ``at``-th, then stops; records when the first leaf started."""

    def __init__(self, at: int | None) -> None:
        self.at, self.started, self.first_at = at, 0, 0.0
        self.inner = InProcessLauncher()

    async def run_leaf(self, loop: StatefulAgentLoop, agent: str, child_id: str,
                       task: str) -> str:
        if self.started == 0:
            self.first_at = time.perf_counter()
        if self.started == self.at:
            raise Stop
        self.started += 1
        return await self.inner.run_leaf(loop, agent, child_id, task)


def make_loop(store: Store, ttl: float = 30.0) -> StatefulAgentLoop:
    llm = ScriptedLLM(lambda request: reply("ok"))
    agent = AgentSpec("w", "does it", "You do it.", llm=llm,
                      config=AgentLoopConfig(lease_ttl=ttl, lease_wait=None, cache_sessions=0))
    return StatefulAgentLoop(llm=llm, store=store, agents=[agent],
                             config=AgentLoopConfig(lease_ttl=ttl, lease_wait=None))


def foreach(n: int) -> tuple[dict[str, Any], list[int]]:
    return {"foreach": "input", "do": {"agent": "w", "input": "item {{index}}"}}, list(range(n))


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    return time.perf_counter() - wall, time.process_time() - cpu


async def journal_bytes(store: Store, workflow_id: str) -> int:
    steps = store._names.workflow_steps
    sql = store._db.dialect.render(
        f"SELECT SUM(LENGTH(path) + LENGTH(kind) + LENGTH(status) + COALESCE(LENGTH(output), 0)"
        f" + COALESCE(LENGTH(child_session), 0) + LENGTH(workflow_id) + 32) FROM {steps} "
        "WHERE workflow_id = ?")

    async def read(conn: Any) -> int:
        row = await conn.fetchone(sql, [workflow_id])
        return int(row[0] or 0)
    return await store._read(read)


async def run_foreach(store: Store, n: int) -> tuple[float, float, str]:
    loop = make_loop(store)
    spec, items = foreach(n)
    ids: list[str] = []

    async def work() -> None:
        ids.append(await loop.start_workflow(spec, items))
        await loop.wait_workflow(ids[0])
    wall, cpu = await timed(work)
    return wall / n, cpu / n, ids[0]


async def bare_sends(store: Store, n: int) -> tuple[float, float, str]:
    loop = make_loop(store)
    sids = [await loop.new_session() for _ in range(n)]

    async def work() -> None:
        for sid in sids:
            await loop.send("item 0", sid)
    wall, cpu = await timed(work)
    return wall / n, cpu / n, sids[-1]


async def resume_at(store: Store, n: int, k: int) -> tuple[float, float, float]:
    """(seconds until the first unfinished item starts, wall and CPU per item after)."""
    dying = make_loop(store, ttl=0.05)
    use_launcher(dying, StopAt(k))
    spec, items = foreach(n)
    workflow_id = await dying.start_workflow(spec, items)
    task = dying._workflow_tasks.get(workflow_id)  # type: ignore[attr-defined]
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.1)  # the dead executor's lease lapses
    loop = make_loop(store)
    probe = StopAt(None)
    use_launcher(loop, probe)
    while True:
        begun = time.perf_counter()
        cpu = time.process_time()
        try:
            await loop.resume_workflow(workflow_id)
            break
        except WorkflowBusyError:
            await asyncio.sleep(0.05)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    first = probe.first_at - begun
    return first, (end - probe.first_at) / (n - k), cpu / (n - k)


async def parallel10(store: Store, rounds: int) -> tuple[float, float]:
    loop = make_loop(store)
    spec = {"parallel": [{"agent": "w", "input": f"p{i}"} for i in range(10)]}

    async def work() -> None:
        for _ in range(rounds):
            await loop.wait_workflow(await loop.start_workflow(spec, None))
    wall, cpu = await timed(work)
    return wall / rounds, cpu / rounds


async def floor_sends(floor: SendFloor, shape: SendShape, n: int) -> tuple[float, float]:
    sids = [await floor.new_session() for _ in range(n)]

    async def work() -> None:
        for sid in sids:
            await floor.send(sid, shape)
    return await timed(work)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


async def run(n: int, repeat: int, workdir: Path) -> None:
    print(f"machine: {machine_facts()}  (shared with other jobs: prefer the CPU column)")
    print(f"SQLite, ScriptedLLM leaves; medians over {repeat} rounds\n")
    rows: dict[str, list[tuple[float, float]]] = {"foreach step": [], "bare send": [],
                                                  "floor send": [], "parallel-10": [],
                                                  "bare sends x10": []}
    resumes: dict[int, list[tuple[float, float, float]]] = {n // 10: [], 9 * n // 10: []}
    sizes: dict[int, int] = {}
    for round_ in range(repeat):
        store = await open_store(str(workdir / f"wf{round_}.db"), table_prefix=fresh_prefix())
        floor = await open_send_floor("sqlite", str(workdir / f"floor{round_}.db"),
                                      fresh_prefix())
        try:
            wall, cpu, workflow_id = await run_foreach(store, n)
            rows["foreach step"].append((wall, cpu))
            sizes[n] = await journal_bytes(store, workflow_id)
            _, _, small = await run_foreach(store, n // 10)
            sizes[n // 10] = await journal_bytes(store, small)
            wall, cpu, sid = await bare_sends(store, n)
            rows["bare send"].append((wall, cpu))
            shape = await shape_of(store, sid)
            wall, cpu = await floor_sends(floor, shape, n)
            rows["floor send"].append((wall / n, cpu / n))
            for k in resumes:
                resumes[k].append(await resume_at(store, n, k))
            rows["parallel-10"].append(await parallel10(store, 20))
            wall, cpu, _ = await bare_sends(store, 200)
            rows["bare sends x10"].append((wall * 10, cpu * 10))
        finally:
            await floor.close()
            await store.aclose()
    print(f"{'':28} {'wall':>12} {'CPU':>12}")
    for name, label in (("foreach step", f"foreach of {n}: per step"),
                        ("bare send", "bare send, new session"),
                        ("floor send", "floor: raw-driver send"),
                        ("parallel-10", "parallel of 10: per run"),
                        ("bare sends x10", "10 bare sends, one by one")):
        walls, cpus = zip(*rows[name], strict=True)
        print(f"{label:28} {us(statistics.median(walls)):>12} {us(statistics.median(cpus)):>12}")
    print("\njournal bytes per step (one row per step: linear):")
    for size, total in sorted(sizes.items()):
        print(f"  n={size:>6}: {total:>10,} bytes, {total / size:,.0f} per step")
    print("\nresume of a foreach stopped at item k:")
    for k, got in resumes.items():
        firsts, walls, cpus = zip(*got, strict=True)
        print(f"  k={k:>5} of {n}: first unfinished item after "
              f"{statistics.median(firsts) * 1e3:,.1f} ms; then {us(statistics.median(walls))}"
              f" wall, {us(statistics.median(cpus))} CPU per item")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench workflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="foreach items (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run(args.n, args.repeat, Path(workdir)))
    return 0
