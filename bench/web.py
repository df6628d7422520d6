"""``python -m bench web``: the web-handler path, a loop per request, beside a warm loop.

For each backend, history length (``--lengths``: 10, 1,000, 10,000 messages, bulk-loaded
with ``Store.append_messages``) and with and without a fold in place (a fold record
leaving the last 20 messages active; the loops then run with a fold strategy, so they
read it), ``--sends`` sends per style, each on its own session:

* ``dsn``: ``async with StatefulAgentLoop(dsn=...)`` per request (nothing else holds the
  store open, so each request opens it again; the window cache and the schema check
  outlive the close, see :mod:`power_loop.store.shared`);
* ``shared``: ``StatefulAgentLoop(store=store)`` per request over one store opened at
  start-up (the documented pattern, docs/sessions.md);
* ``warm``: one loop for every request;
* ``process``: ``--processes`` new Python processes, each timing its first send (and,
  apart, its ``open_store``).

Figures are p50 and p99 (of ``--sends`` samples: p99 is their worst but one) of wall
milliseconds, with the CPU milliseconds of this process (or the child's) beside them:
the machine is shared, CPU time is steadier. The floor beside them is the raw driver
writing the same rows in the same transactions (:mod:`bench.send_floor`); the cold
figure's floor adds reading the active window's rows through the ``Database`` port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loop import TEXT, _lengths, _positive, history, make_loop, shape_of
from bench.machine import machine_facts
from bench.send_floor import open_send_floor
from bench.servers import add_server_arguments, provision
from power_loop import AgentLoopConfig, LLMSummaryFold, StatefulAgentLoop
from power_loop.llm.scripted import ScriptedLLM
from power_loop.store import Store, open_store
from power_loop.store.dsn import parse_dsn
from power_loop.testing import drop_store_tables, fresh_prefix

STYLES = ("dsn", "shared", "warm", "process")
DEFAULT_LENGTHS = (10, 1_000, 10_000)
DEFAULT_SENDS = 30
DEFAULT_PROCESSES = 3
WARMUP = 2
ACTIVE = 20
"""Messages a fold leaves active."""


def config(folded: bool) -> AgentLoopConfig:
    """A loop that reads folds (its budget is never reached here) or the default one."""
    if not folded:
        return AgentLoopConfig()
    return AgentLoopConfig(fold_strategy=LLMSummaryFold(), context_budget_tokens=10_000_000)


def loop_on(store: Store, folded: bool) -> StatefulAgentLoop:
    base = make_loop("no_tool", store)
    return StatefulAgentLoop(llm=base._llm, store=store, config=config(folded))


async def build(store: Store, length: int, folded: bool) -> str:
    """A session of ``length`` messages, with a fold before its last 20 when asked."""
    sid = (await store.create_session()).id
    if length:
        await store.append_messages(sid, history(length))
    if folded and length >= 4:
        end_seq = length - min(ACTIVE, length // 2 // 2 * 2)
        lease = await store.acquire_lease(sid, "bench", ttl=60)
        await store.begin_fold(sid, epoch=lease.epoch, fold_index=0, strategy="bench",
                               first_send=0, end_send=end_seq // 2, end_seq=end_seq)
        await store._write(store._commit_fold_txn, sid, lease.epoch, 0,
                           "The conversation so far: meeting notes summarised.", [], {}, None)
        await store.release_lease(lease)
    return sid


@dataclass
class Case:
    """One history length, folded or not: samples per style, and the floors."""

    length: int
    folded: bool
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    open_ms: list[float] = field(default_factory=list)
    raw_ms: list[tuple[float, float]] = field(default_factory=list)
    read_floor_ms: float = 0.0


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def timed(fn: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


async def run_style(style: str, store: Store, dsn: str, prefix: str, sid: str, folded: bool,
                    sends: int) -> tuple[list[float], list[float]]:
    warm = loop_on(store, folded)

    async def one() -> object:
        if style == "warm":
            return await warm.send(TEXT, sid)
        if style == "shared":
            return await loop_on(store, folded).send(TEXT, sid)
        llm = ScriptedLLM(lambda _: "ok")
        async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=prefix,
                                     config=config(folded)) as loop:
            return await loop.send(TEXT, sid)

    for _ in range(WARMUP):
        await one()
    samples = [await timed(one) for _ in range(sends)]
    return [w for w, _ in samples], [c for _, c in samples]


def run_process(dsn: str, prefix: str, sid: str, folded: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench", "web", "--child", dsn, prefix, sid,
                          "1" if folded else "0"], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def child(dsn: str, prefix: str, sid: str, folded: bool) -> dict[str, float]:
    """In a new process: open the store, then one send from a new loop, timed apart."""
    cpu, wall = time.process_time(), time.perf_counter()
    store = await open_store(dsn, table_prefix=prefix)
    open_ms = (time.perf_counter() - wall) * 1e3
    try:
        send_wall, send_cpu = await timed(lambda: loop_on(store, folded).send(TEXT, sid))
        fold = await store.latest_fold(sid) if folded else None
    finally:
        await store.aclose()
    del cpu
    result = {"open_ms": open_ms, "wall_ms": send_wall, "cpu_ms": send_cpu}
    if store.backend == "sqlite":  # the physical limit: a bare SELECT of the same rows
        # in the statement the store runs (Store.read_message_texts: two columns)
        result["raw_wall_ms"], result["raw_cpu_ms"] = bare_select(
            parse_dsn(dsn).location, store._sql.read_bodies_range,
            (sid, fold.end_seq if fold else 0, 2**62))
    return result


def bare_select(path: str, sql: str, args: tuple[object, ...]) -> tuple[float, float]:
    """Wall and CPU ms of the stdlib ``sqlite3`` reading the rows a cold send reads."""
    conn = sqlite3.connect(path)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        conn.execute(sql, args).fetchall()
        return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
    finally:
        conn.close()


async def read_floor(store: Store, sid: str, folded: bool, length: int) -> float:
    """Milliseconds to read the rows a cold send needs, through the port (median of 5)."""
    fold = await store.latest_fold(sid) if folded else None
    start = fold.end_seq if fold else 0
    sql = store._database.dialect.render(
        f"SELECT seq, send_index, role, body FROM {store.table_prefix}messages "
        "WHERE session_id = ? AND seq >= ? ORDER BY seq")
    times = []
    for _ in range(5):
        begin = time.perf_counter()
        async with store._database.transaction(write=False) as conn:
            await conn.fetch(sql, [sid, start])
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


async def measure(backend: str, dsn: str, floor_dsn: str, lengths: Sequence[int], sends: int,
                  processes: int) -> tuple[list[Case], tuple[float, float]]:
    prefix = fresh_prefix()
    store = await open_store(dsn, table_prefix=prefix)
    cases: list[Case] = []
    try:
        floor = await open_send_floor(backend, floor_dsn, fresh_prefix())
        try:
            probe = loop_on(store, False)
            sid = await probe.new_session()
            await probe.send(TEXT, sid)
            shape = await shape_of(store, sid)
            fsid = await floor.new_session()
            floor_samples = [await timed(lambda: floor.send(fsid, shape))
                             for _ in range(sends + WARMUP)][WARMUP:]
        finally:
            await floor.close()
        floor_ms = (statistics.median(w for w, _ in floor_samples),
                    statistics.median(c for _, c in floor_samples))
        for length in lengths:
            for folded in (False, True):
                _progress(f"{backend}: {length:,} messages, {'folded' if folded else 'no fold'}")
                case = Case(length, folded)
                sids = {style: await build(store, length, folded) for style in STYLES}
                await store.vacuum()
                for style in STYLES[:3]:
                    case.wall[style], case.cpu[style] = await run_style(
                        style, store, dsn, prefix, sids[style], folded, sends)
                runs = [await asyncio.to_thread(run_process, dsn, prefix, sids["process"],
                                                folded) for _ in range(processes)]
                case.wall["process"] = [r["wall_ms"] for r in runs]
                case.cpu["process"] = [r["cpu_ms"] for r in runs]
                case.open_ms = [r["open_ms"] for r in runs]
                case.raw_ms = [(r["raw_wall_ms"], r["raw_cpu_ms"]) for r in runs
                               if "raw_wall_ms" in r]
                case.read_floor_ms = await read_floor(store, sids["process"], folded, length)
                cases.append(case)
    finally:
        try:
            await drop_store_tables(store)
        finally:
            await store.aclose()
    return cases, floor_ms


def render(backend: str, where: str, cases: list[Case], floor: tuple[float, float]) -> str:
    lines = [f"\n== {backend} ({where}) ==",
             f"floor: the raw driver writing one send's rows in its transactions: "
             f"{floor[0]:.2f} ms wall, {floor[1]:.2f} ms CPU",
             f"{'history':>8} {'fold':>5} {'style':>8} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'CPU p50':>8} {'x warm':>7} {'floor ms':>9}"]
    for case in cases:
        warm = statistics.median(case.wall["warm"])
        for style in STYLES:
            wall, cpu = case.wall[style], case.cpu[style]
            floor_ms = floor[0] + (case.read_floor_ms if style == "process" else 0.0)
            lines.append(
                f"{case.length:>8,} {'yes' if case.folded else 'no':>5} {style:>8} "
                f"{statistics.median(wall):>8.2f} {pct(wall, 0.99):>8.2f} "
                f"{statistics.median(cpu):>8.2f} {statistics.median(wall) / warm:>7.1f} "
                f"{floor_ms:>9.2f}")
        lines.append(f"{'':>15} new process: open_store p50 {statistics.median(case.open_ms):.1f}"
                     f" ms; reading the window's rows (port) {case.read_floor_ms:.2f} ms")
        if case.raw_ms:
            lines.append(f"{'':>15} in that process, a bare sqlite3 SELECT of those rows: "
                         f"{statistics.median(w for w, _ in case.raw_ms):.1f} ms wall, "
                         f"{statistics.median(c for _, c in case.raw_ms):.1f} ms CPU")
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Run the benchmark (or, with ``--child``, one new process's first send)."""
    if argv[:1] == ["--child"]:
        dsn, prefix, sid, folded = argv[1:5]
        print(json.dumps(asyncio.run(child(dsn, prefix, sid, folded == "1"))))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench web",
        description="A loop per request (from dsn=, over a shared store), a warm loop and a "
                    "new process's first send, by history length, with and without a fold.")
    parser.add_argument("--lengths", type=_lengths, default=DEFAULT_LENGTHS,
                        help="history lengths in messages (default: 10,1000,10000)")
    parser.add_argument("--sends", type=_positive, default=DEFAULT_SENDS,
                        help="timed sends per style and case (default: %(default)s)")
    parser.add_argument("--processes", type=_positive, default=DEFAULT_PROCESSES,
                        help="new processes per case (default: %(default)s)")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    facts = machine_facts()
    print(f"machine: {facts} (shared with other work: read the CPU columns)")
    status = 0
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(args.backends, pg_dsn=args.pg_dsn, mysql_dsn=args.mysql_dsn) as servers:
        for backend in args.backends:
            if backend == "sqlite":
                dsn, floor_dsn, where = str(Path(tmp) / "web.db"), str(Path(tmp) / "floor.db"), \
                    "a temporary file"
            else:
                server = servers[backend]
                if server.dsn is None:
                    print(f"\n== {backend}: NOT MEASURED: {server.problem}")
                    status = 1
                    continue
                dsn = floor_dsn = server.dsn
                where = server.address
            try:
                cases, floor = asyncio.run(measure(backend, dsn, floor_dsn, args.lengths,
                                                   args.sends, args.processes))
            except Exception as exc:
                print(f"\n== {backend}: the run failed: {type(exc).__name__}: {exc}")
                status = 1
                continue
            print(render(backend, where, cases, floor), flush=True)
    return status
