"""``python -m bench store``: appends per second through ``Store.append_messages``.

For each backend, two workloads:

* one session: ``--n`` sequential appends of one message;
* ten sessions: ten asyncio tasks, one per session, ``--n / 10`` appends each.

Every append is one transaction holding one message with a ~200-byte JSON body, timed
on three sides:

* ``power_loop``: ``Store.append_messages``;
* ``port``: the same transaction written against power_loop's ``Database`` port
  (``database.transaction()``, ``conn.fetchone``/``conn.execute``) on the store's own
  tables, which separates what the driver adapter and its pool cost from what the store
  layer above them costs;
* ``floor``: the same transaction written against the raw driver (:mod:`bench.floor`).

All sides warm up first (connections opened, statements prepared), then run
``--repeat`` rounds, rotating which side goes first; each figure is the median over the
rounds. Beside wall time, the process's CPU time per append is recorded (driver threads
included): it is what this process spends, and moves far less than wall time when other
work shares the machine. A last, untimed pass counts the statements each append sends
through the driver (:mod:`bench.statements`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.floor import open_floor
from bench.machine import machine_facts, render_table
from bench.servers import Server, add_server_arguments, provision
from bench.statements import count_statements
from power_loop.store import Database, NewMessage, open_store
from power_loop.testing import drop_store_tables, fresh_prefix

SESSIONS = 10
"""Concurrent sessions (tasks) in the second workload."""
SHAPES = (1, SESSIONS)
SIDES = ("power_loop", "port", "floor")
COUNTED_APPENDS = 50
"""Appends per side and workload in the statement-counting pass."""
DEFAULT_N = 1000
DEFAULT_REPEAT = 9
"""About 90 s for the three backends on a quiet 2-core machine (warm-up included)."""

BODY: dict[str, Any] = {"parts": [{"kind": "text", "text": (
    "Summarise the attached meeting notes in three bullet points, keep the action items "
    "with their owners, and flag anything that needs a decision before Friday's review.")}]}
"""A user message whose JSON encoding is about 200 bytes."""
BODY_JSON = json.dumps(BODY, ensure_ascii=False, separators=(",", ":"))

Append = Callable[[int], Awaitable[None]]


@dataclass
class Case:
    """One workload on one backend: per-round timings and statements per append."""

    sessions: int
    wall_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side, wall microseconds per append in each round."""
    cpu_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side, this process's CPU microseconds per append in each round."""
    statements: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per side, statements per append by leading keyword."""

    def wall(self, side: str) -> float:
        return statistics.median(self.wall_us[side])

    def cpu(self, side: str) -> float:
        return statistics.median(self.cpu_us[side])

    def rate(self, side: str) -> float:
        """Appends per second (from the median wall time)."""
        return 1e6 / self.wall(side)

    def noise(self) -> float:
        """The largest interquartile range / median of any side's wall times."""
        spreads = []
        for rounds in self.wall_us.values():
            low, _, high = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else (0, 0, 0)
            spreads.append((high - low) / statistics.median(rounds))
        return max(spreads)


@dataclass
class BackendResult:
    """One backend's cases, or why it could not be measured."""

    backend: str
    server: str = ""
    where: str = ""
    cases: list[Case] = field(default_factory=list)
    problem: str | None = None


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def run_appends(append: Append, sessions: int, n: int) -> tuple[float, float]:
    """Run ``n`` appends over ``sessions`` concurrent tasks: wall and CPU us per append."""
    per_session = n // sessions

    async def session(slot: int) -> None:
        for _ in range(per_session):
            await append(slot)

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(session(slot) for slot in range(sessions)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = per_session * sessions
    return wall * 1e6 / done, cpu * 1e6 / done


async def _count(append: Append, sessions: int) -> dict[str, float]:
    appends = COUNTED_APPENDS // sessions * sessions
    with count_statements() as counts:
        await run_appends(append, sessions, appends)
    return {name: count / appends for name, count in counts.items()}


def port_append(database: Database, prefix: str, ids: Sequence[str]) -> Append:
    """An append written against the ``Database`` port, into the store's own tables."""
    dialect = database.dialect
    sessions = dialect.quote(f"{prefix}sessions")
    messages = dialect.quote(f"{prefix}messages")
    returning = dialect.supports_update_returning
    update = dialect.render(
        f"UPDATE {sessions} SET next_seq = next_seq + 1, updated_at = {{now}} WHERE id = ?"
        + (" RETURNING next_seq" if returning else ""))
    select = dialect.render(f"SELECT next_seq FROM {sessions} WHERE id = ?")
    insert = dialect.render(f"INSERT INTO {messages} (session_id, seq, send_index, role, body, "
                            "created_at) VALUES (?, ?, ?, ?, ?, {now})")

    async def append(slot: int) -> None:
        sid = ids[slot]
        async with database.transaction() as conn:
            if returning:
                row = await conn.fetchone(update, [sid])
            else:
                await conn.execute(update, [sid])
                row = await conn.fetchone(select, [sid])
            if row is None:
                raise RuntimeError(f"session {sid!r} vanished from {prefix}sessions")
            await conn.execute(insert, [sid, int(row[0]) - 1, 0, "user", BODY_JSON])

    return append


async def measure(backend: str, location: str, floor_location: str, *, n: int,
                  repeat: int, warmup: int) -> BackendResult:
    """Time the three sides on one backend (tables dropped afterwards)."""
    result = BackendResult(backend)
    ids = [f"bench-session-{i}" for i in range(SESSIONS)]
    store = await open_store(location, table_prefix=fresh_prefix())
    try:
        for sid in ids:
            await store.create_session(sid)
        floor = await open_floor(backend, floor_location, fresh_prefix(), ids, BODY_JSON)
        result.server = floor.server
        try:
            async def power_loop(slot: int) -> None:
                await store.append_messages(ids[slot], [NewMessage(0, "user", BODY)])

            sides: dict[str, Append] = {
                "power_loop": power_loop,
                "port": port_append(store._database, store.table_prefix, ids),
                "floor": floor.append,
            }
            _progress(f"{backend}: warming up")
            for sessions in SHAPES:
                for append in sides.values():
                    await run_appends(append, sessions, warmup)
            result.cases = [Case(sessions) for sessions in SHAPES]
            for round_ in range(repeat):
                _progress(f"{backend}: round {round_ + 1}/{repeat}")
                # Rotate the order so that no side always runs first (or last) in a round.
                order = SIDES[round_ % len(SIDES):] + SIDES[:round_ % len(SIDES)]
                for case in result.cases:
                    for side in order:
                        wall, cpu = await run_appends(sides[side], case.sessions, n)
                        case.wall_us[side].append(wall)
                        case.cpu_us[side].append(cpu)
            for case in result.cases:
                for side in SIDES:
                    case.statements[side] = await _count(sides[side], case.sessions)
        finally:
            await floor.close()
    finally:
        try:
            await drop_store_tables(store)
        finally:
            await store.aclose()
    return result


async def measure_all(backends: Sequence[str], servers: dict[str, Server], workdir: Path, *,
                      n: int, repeat: int, warmup: int) -> list[BackendResult]:
    """Measure each backend in turn; a failure is recorded and the next one still runs."""
    results: list[BackendResult] = []
    for backend in backends:
        if backend == "sqlite":
            where = "temporary files, power_loop's default options"
            location, floor_location = str(workdir / "power_loop.db"), str(workdir / "floor.db")
        else:
            server = servers[backend]
            where = server.address
            if server.dsn is None:
                results.append(BackendResult(backend, where=where, problem=server.problem))
                continue
            location = floor_location = server.dsn
        try:
            result = await measure(backend, location, floor_location, n=n, repeat=repeat,
                                   warmup=warmup)
        except Exception as exc:
            _progress(f"{backend}: failed: {type(exc).__name__}: {exc}")
            result = BackendResult(backend, problem=f"the run failed: {type(exc).__name__}: {exc}")
        result.where = where
        results.append(result)
    return results


# -- output ------------------------------------------------------------------------------

LEGEND = """\
ratio     power_loop/s divided by floor/s
noise     largest interquartile range / median of any side's wall time over the rounds
stmts     SQL statements per append, counted at the driver: power_loop / floor
wall us   microseconds per append (1e6 / rate; amortised over the tasks when concurrent)
cpu us    this process's CPU microseconds per append, driver threads included
port - floor is what power_loop's driver adapter and pool add to the raw driver;
power_loop - port is what the Store layer adds on top of them."""


def _throughput_row(backend: str, case: Case) -> list[str]:
    pl, port, floor = (case.rate(side) for side in SIDES)
    stmts = [f"{sum(case.statements[side].values()):g}" for side in ("power_loop", "floor")]
    return [backend, str(case.sessions), f"{pl:,.0f}", f"{port:,.0f}", f"{floor:,.0f}",
            f"{pl / floor:.2f}", f"{case.noise():.0%}", " / ".join(stmts)]


def _time_row(backend: str, case: Case) -> list[str]:
    wall = [case.wall(side) for side in SIDES]
    cpu = [case.cpu(side) for side in SIDES]
    return [backend, str(case.sessions), *(f"{v:,.0f}" for v in wall),
            f"{wall[0] - wall[2]:+,.0f}", *(f"{v:,.0f}" for v in cpu), f"{cpu[0] - cpu[2]:+,.0f}"]


def _statements_text(counts: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {value:g}" for name, value in counts.items())
    return f"{sum(counts.values()):g}  ({parts})"


def render(results: Sequence[BackendResult], facts: dict[str, str], *, n: int, repeat: int,
           warmup: int) -> str:
    """The report: machine header, the tables, statements per append, failures."""
    header = dict(facts)
    for result in results:
        header[result.backend] = (f"{result.server} at {result.where}" if result.server
                                  else result.where)
    header["workload"] = (f"{n} appends per timed run, one {len(BODY_JSON)}-byte message per "
                          f"append (one transaction); median of {repeat} rounds after "
                          f"{warmup} warm-up appends per side and workload")
    width = max(len(k) for k in header)
    lines = ["power_loop store benchmark: Store.append_messages against the raw driver", ""]
    lines += [f"  {key:<{width}}  {value}" for key, value in header.items()]
    measured = [(r.backend, c) for r in results for c in r.cases]
    if measured:
        lines += ["", "appends per second", render_table(
            ["backend", "sessions", "power_loop/s", "port/s", "floor/s", "ratio", "noise",
             "stmts"], [_throughput_row(b, c) for b, c in measured])]
        lines += ["", "microseconds per append", render_table(
            ["backend", "sessions", "wall: power_loop", "port", "floor", "overhead",
             "cpu: power_loop", "port", "floor", "overhead"],
            [_time_row(b, c) for b, c in measured])]
        lines += ["", LEGEND, "", "statements per append, by leading keyword"]
        detail: list[list[str]] = []
        for result in results:
            labels = [result.backend]
            for case in result.cases:
                for side in SIDES:
                    detail.append([labels.pop() if labels else "", str(case.sessions), side,
                                   _statements_text(case.statements[side])])
        lines.append(render_table(["backend", "sessions", "side", "statements"], detail,
                                  left=4))
    failed = [r for r in results if r.problem]
    if failed:
        lines += ["", "NOT MEASURED"]
        lines += [f"  {r.backend}: {r.problem}" for r in failed]
    return "\n".join(lines)


def as_json(results: Sequence[BackendResult], facts: dict[str, str], *, n: int, repeat: int,
            warmup: int) -> str:
    """The results, every round included, as a JSON document."""
    backends = []
    for result in results:
        entry = asdict(result)
        for case, data in zip(result.cases, entry["cases"], strict=True):
            data["appends_per_second"] = {side: case.rate(side) for side in SIDES}
            data["ratio"] = case.rate("power_loop") / case.rate("floor")
        backends.append(entry)
    return json.dumps({
        "benchmark": "store", "machine": facts,
        "config": {"n": n, "repeat": repeat, "warmup": warmup, "sessions": list(SHAPES),
                   "body_bytes": len(BODY_JSON)},
        "backends": backends,
    }, indent=2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str]) -> int:
    """Run the benchmark; exit status 1 when a backend could not be measured."""
    parser = argparse.ArgumentParser(
        prog="python -m bench store",
        description="Appends per second through Store.append_messages on each backend, "
                    "beside the same transactions written against power_loop's Database "
                    "port and against the raw driver.")
    parser.add_argument("--n", type=_positive, default=DEFAULT_N,
                        help="appends per timed run, rounded down to a multiple of "
                             f"{SESSIONS} (default: %(default)s)")
    parser.add_argument("--repeat", type=_positive, default=DEFAULT_REPEAT,
                        help="timed rounds per side and workload; figures are medians "
                             "(default: %(default)s)")
    parser.add_argument("--warmup", type=_positive, default=None,
                        help="warm-up appends per side and workload (default: n/2)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of the tables")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    n = max(args.n // SESSIONS, 1) * SESSIONS
    warmup = max((args.warmup or n // 2) // SESSIONS, 1) * SESSIONS
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(args.backends, pg_dsn=args.pg_dsn, mysql_dsn=args.mysql_dsn) as servers:
        results = asyncio.run(measure_all(args.backends, servers, Path(tmp), n=n,
                                          repeat=args.repeat, warmup=warmup))
    if args.json:
        print(as_json(results, facts, n=n, repeat=args.repeat, warmup=warmup))
        for result in results:
            if result.problem:
                _progress(f"{result.backend} NOT MEASURED: {result.problem}")
    else:
        print(render(results, facts, n=n, repeat=args.repeat, warmup=warmup))
    return 1 if any(r.problem for r in results) else 0
