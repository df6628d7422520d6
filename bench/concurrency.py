"""``python -m bench concurrency``: no-tool sends from many sessions at once.

For each backend, with ``ScriptedLLM`` (no network) as the model, ``--n`` sends per run
spread evenly over concurrent sessions, each an asyncio task sending one after another
through one warm loop over one store (its default pool: 10 connections on PostgreSQL
and MySQL, one writer on SQLite):

* in one process with each of ``--sessions`` (1, 4, 16, 64) sessions;
* in ``--processes`` (2) processes, each with ``--process-sessions`` (16) sessions,
  started together once every process is ready.

Beside each run, the commit floor (:class:`bench.send_floor.CommitFloor`) at the same
concurrency: two one-statement commits per send through the raw driver, the sessions
sharing as many connections as power_loop's pool holds. Reported: sends per second,
and the client's CPU time per send (every process of the run added up; the database
server's is not included), wall and CPU over the floor's. Figures are medians of
``--repeat`` rounds. The machine may be shared: prefer the CPU column when it is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loop import TEXT, make_loop, shape_of
from bench.machine import machine_facts, render_table
from bench.send_floor import CommitFloor, SendShape, open_commit_floor
from bench.servers import Server, add_server_arguments, provision
from power_loop.store import Store, open_store
from power_loop.testing import drop_store_tables, fresh_prefix

DEFAULT_BACKENDS = ["sqlite", "postgresql", "mysql"]
DEFAULT_SESSIONS = (1, 4, 16, 64)
POOL = 10
"""Connections: power_loop's default ``pool_max_size``, and the floor's."""
SIDES = ("power_loop", "commits")


@dataclass
class Run:
    """One concurrency level on one backend: per-round figures per side."""

    label: str
    processes: int
    sessions: int
    """Sessions per process."""
    wall_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side and round, wall microseconds per send (of the whole run)."""
    cpu_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side and round, client CPU microseconds per send (all processes)."""

    def rate(self, side: str) -> float:
        return 1e6 / statistics.median(self.wall_us[side])

    def cpu(self, side: str) -> float:
        return statistics.median(self.cpu_us[side])


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- one process's share of a run ----------------------------------------------------------


Sender = Callable[[], Awaitable[None]]


async def _power_loop_senders(store: Store, sessions: int) -> list[Sender]:
    """One warm sender per new session (one untimed send each) over one loop."""
    loop = make_loop("no_tool", store)
    senders: list[Sender] = []
    for _ in range(sessions):
        sid = await loop.new_session()
        await loop.send(TEXT, sid)

        async def send(sid: str = sid) -> None:
            await loop.send(TEXT, sid)

        senders.append(send)
    return senders


async def _floor_senders(floor: CommitFloor, shape: SendShape, sessions: int) -> list[Sender]:
    senders: list[Sender] = []
    for slot in range(sessions):
        sid = await floor.new_session()
        await floor.send(sid, shape, slot)

        async def send(sid: str = sid, slot: int = slot) -> None:
            await floor.send(sid, shape, slot)

        senders.append(send)
    return senders


async def _drive(senders: Sequence[Sender], n: int) -> tuple[float, float, int]:
    """Each sender sends ``n // len(senders)`` times, all at once: wall s, CPU s, sends."""
    each = max(1, n // len(senders))

    async def task(send: Sender) -> None:
        for _ in range(each):
            await send()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task(s) for s in senders))
    return time.perf_counter() - wall, time.process_time() - cpu, each * len(senders)


async def _shape(location: str, prefix: str) -> SendShape:
    store = await open_store(location, table_prefix=prefix)
    try:
        loop = make_loop("no_tool", store)
        sid = await loop.new_session()
        await loop.send(TEXT, sid)
        return await shape_of(store, sid)
    finally:
        await store.aclose()


async def _child(side: str, backend: str, location: str, prefix: str, sessions: int,
                 n: int) -> None:
    """A process of a multi-process run: set up, say ``ready``, wait for a line on
    stdin, run, print the figures as JSON."""
    if side == "power_loop":
        store = await open_store(location, table_prefix=prefix)
        senders = await _power_loop_senders(store, sessions)
    else:
        shape = await _shape(location, prefix)
        floor = await open_commit_floor(backend, location, prefix, size=min(POOL, sessions))
        floor.keep_tables()
        senders = await _floor_senders(floor, shape, sessions)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    wall, cpu, sends = await _drive(senders, n)
    print(json.dumps({"wall": wall, "cpu": cpu, "sends": sends}), flush=True)
    if side == "power_loop":
        await store.aclose()
    else:
        await floor.close()


async def _processes(side: str, backend: str, location: str, prefix: str, count: int,
                     sessions: int, n: int) -> tuple[float, float, int]:
    """``count`` child processes run together: wall s (from the go to the last one
    done), CPU s (added up), sends."""
    children = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.concurrency", "--child", side, backend, location, prefix,
        str(sessions), str(n // count), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE) for _ in range(count)]
    for child in children:
        assert child.stdout is not None
        line = await child.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"a benchmark process did not start: {line!r}")
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    figures = []
    for child in children:
        assert child.stdout is not None
        figures.append(json.loads(await child.stdout.readline()))
    wall = time.perf_counter() - start
    for child in children:
        await child.wait()
    return (wall, sum(f["cpu"] for f in figures), sum(f["sends"] for f in figures))


# -- a backend -----------------------------------------------------------------------------


async def measure(backend: str, location: str, opts: argparse.Namespace) -> list[Run]:
    """Every concurrency level on one backend, sides taking turns to go first."""
    prefix, floor_prefix = fresh_prefix(), fresh_prefix()
    store = await open_store(location, table_prefix=prefix)
    floor = await open_commit_floor(backend, location, floor_prefix, size=POOL)
    try:
        loop = make_loop("no_tool", store)
        sid = await loop.new_session()
        for _ in range(opts.warmup):
            await loop.send(TEXT, sid)
        shape = await shape_of(store, sid)
        runs = [Run(f"{s} session{'s' if s > 1 else ''}", 1, s) for s in opts.sessions]
        if opts.processes > 1:
            runs.append(Run(f"{opts.processes} processes x {opts.process_sessions}",
                            opts.processes, opts.process_sessions))
        for round_ in range(opts.repeat):
            _progress(f"{backend}: round {round_ + 1}/{opts.repeat}")
            for run in runs:
                for side in SIDES[round_ % 2:] + SIDES[:round_ % 2]:
                    if run.processes > 1:
                        where = prefix if side == "power_loop" else floor_prefix
                        wall, cpu, sends = await _processes(
                            side, backend, location, where, run.processes, run.sessions,
                            opts.n)
                    else:
                        senders = (await _power_loop_senders(store, run.sessions)
                                   if side == "power_loop" else
                                   await _floor_senders(floor, shape, run.sessions))
                        wall, cpu, sends = await _drive(senders, opts.n)
                    run.wall_us[side].append(wall * 1e6 / sends)
                    run.cpu_us[side].append(cpu * 1e6 / sends)
        return runs
    finally:
        try:
            await floor.close()
        finally:
            try:
                await drop_store_tables(store)
            finally:
                await store.aclose()


def render(results: dict[str, list[Run] | str], facts: dict[str, str],
           opts: argparse.Namespace, servers: dict[str, str]) -> str:
    header = dict(facts)
    header.update(servers)
    header["workload"] = ("no_tool sends (ScriptedLLM answers at once); "
                          f"{opts.n} sends per run over the sessions; median of "
                          f"{opts.repeat} rounds; the machine may be shared")
    width = max(len(k) for k in header)
    lines = ["power_loop concurrency benchmark: sends from many sessions at once", ""]
    lines += [f"  {key:<{width}}  {value}" for key, value in header.items()]
    rows, failed = [], []
    for backend, runs in results.items():
        if isinstance(runs, str):
            failed.append(f"  {backend}: {runs}")
            continue
        for run in runs:
            pl, fl = run.rate("power_loop"), run.rate("commits")
            cpu, floor_cpu = run.cpu("power_loop"), run.cpu("commits")
            rows.append([backend, run.label, f"{pl:,.0f}", f"{fl:,.0f}", f"{fl / pl:.2f}",
                         f"{cpu:,.0f}", f"{floor_cpu:,.0f}", f"{cpu / floor_cpu:.2f}"])
    if rows:
        lines += ["", render_table(
            ["backend", "concurrency", "power_loop/s", "floor: commits/s", "wall x",
             "cpu us/send", "floor cpu us", "cpu x"], rows, left=2)]
        lines += ["", "floor: commits  two one-statement commits per send (an INSERT of the "
                  "message row, autocommit) through the raw driver, the sessions sharing "
                  f"{POOL} connections (SQLite: one)",
                  "x               power_loop's wall (cpu) time per send over the floor's",
                  "cpu             the client's CPU per send, all its processes added up"]
    if failed:
        lines += ["", "NOT MEASURED", *failed]
    return "\n".join(lines)


def _counts(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts are integers of 1 or more")
    return values


def main(argv: list[str]) -> int:
    """Run the benchmark; exit status 1 when a backend could not be measured."""
    if argv[:1] == ["--child"]:
        side, backend, location, prefix, sessions, n = argv[1:7]
        asyncio.run(_child(side, backend, location, prefix, int(sessions), int(n)))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench concurrency",
        description="No-tool sends from 1, 4, 16, 64 sessions in one process and from 2 "
                    "processes, beside the commit floor, with the client's CPU per send.")
    parser.add_argument("--n", type=int, default=1_280, help="sends per run (default 1280)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up sends (default 100)")
    parser.add_argument("--sessions", type=_counts, default=DEFAULT_SESSIONS,
                        help="session counts in one process (default 1,4,16,64)")
    parser.add_argument("--processes", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--process-sessions", type=int, default=16,
                        help="sessions per process in the multi-process run (default 16)")
    add_server_arguments(parser)
    parser.set_defaults(backends=DEFAULT_BACKENDS)
    opts = parser.parse_args(argv)
    facts = machine_facts()
    results: dict[str, list[Run] | str] = {}
    where: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(opts.backends, pg_dsn=opts.pg_dsn, mysql_dsn=opts.mysql_dsn) as servers:
        for backend in opts.backends:
            server: Server | None = servers.get(backend)
            if backend == "sqlite":
                location = str(Path(tmp) / "concurrency.db")
                where[backend] = "a temporary file, power_loop's default options"
            elif server is None or server.dsn is None:
                results[backend] = (server.problem if server else None) or "no server"
                continue
            else:
                location, where[backend] = server.dsn, server.address
            try:
                results[backend] = asyncio.run(measure(backend, location, opts))
            except Exception as exc:
                _progress(f"{backend}: failed: {type(exc).__name__}: {exc}")
                results[backend] = f"the run failed: {type(exc).__name__}: {exc}"
    print(render(results, facts, opts, where))
    return 1 if any(isinstance(r, str) for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
