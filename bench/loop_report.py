"""The results of ``python -m bench loop`` and how they are printed (tables or JSON)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bench.machine import render_table

SIDES = ("power_loop", "floor", "commits")
"""power_loop; the statement floor (its rows and transactions, statement by statement,
through the raw driver); the commit floor (one one-statement commit per durable write)."""
SIDE_TEXT = {"power_loop": "power_loop", "floor": "floor: statements",
             "commits": "floor: commits"}
METRICS = ("wall", "cpu", "store", "store_cpu", "port", "loop")
"""Per measured send: wall time and this process's CPU time; wall and CPU time inside
the Store; wall time inside the Database port (a part of the store's); and the loop's
own wall time (wall - store)."""

TARGET_RATES: dict[tuple[str, str], int] = {
    ("sqlite", "no_tool"): 1_200, ("sqlite", "async_tool"): 600,
    ("sqlite", "sync_tool"): 600, ("postgresql", "no_tool"): 1_100,
}
TARGET_CPU_X = 2.0
"""Client CPU per no-tool send at most this many times the statement floor's."""
TARGET_COMMITS_X = 2.0
"""PostgreSQL no-tool sends/s within this factor of the commit floor's."""
"""The issue's goals in sends per second (printed, never asserted)."""
WARM_UNTIMED = 3
"""Untimed sends between a cold send and the warm sends timed after it."""
TARGET_WRITE_TXNS = 2
"""At most this many write transactions per no-tool send."""
FLAT = 1.25
"""Store time at the longest history within this factor of the shortest's: flat."""


def _noise(rounds: Sequence[float]) -> float:
    """Interquartile range / median (0 with fewer than two rounds)."""
    if len(rounds) < 2:
        return 0.0
    low, _, high = statistics.quantiles(rounds, n=4)
    return (high - low) / statistics.median(rounds)


@dataclass
class Throughput:
    """One workload on one backend: per-round timings and SQL per send, per side."""

    workload: str
    wall_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side, wall microseconds per send in each round."""
    cpu_us: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    """Per side, this process's CPU microseconds per send in each round."""
    statements: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per side, statements per send by leading keyword."""
    write_txns: dict[str, float] = field(default_factory=dict)
    """Per side, transactions per send holding an INSERT/UPDATE/DELETE."""
    read_txns: dict[str, float] = field(default_factory=dict)
    """Per side, read-only transactions per send."""

    def wall(self, side: str) -> float:
        return statistics.median(self.wall_us[side])

    def cpu(self, side: str) -> float:
        return statistics.median(self.cpu_us[side])

    def rate(self, side: str) -> float:
        """Sends per second (from the median wall time)."""
        return 1e6 / self.wall(side)

    def noise(self) -> float:
        """The largest interquartile range / median of either side's wall times."""
        return max(_noise(rounds) for rounds in self.wall_us.values())


@dataclass
class Latency:
    """Sends at one history length: the cold first send and the warm ones after it."""

    workload: str
    length: int
    warm: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    """Per metric, the median microseconds per warm send in each round."""
    cold: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    """Per metric, the cold first send's microseconds in each round."""

    def warm_us(self, metric: str) -> float:
        return statistics.median(self.warm[metric])

    def cold_us(self, metric: str) -> float:
        return statistics.median(self.cold[metric])


@dataclass
class Memory:
    """``tracemalloc`` figures (bytes) of a cold then warm run on one long session."""

    length: int
    held: int
    """Traced memory still held after the cold send (the loop's cached history, mostly)."""
    cold_peak: int
    """Peak traced memory during the cold send, above what was held before it."""
    warm_peak: int
    """Peak traced memory during the warm sends, above what was held before them."""
    max_rss: int
    """The process's peak resident set size at the end of the run (ru_maxrss)."""


@dataclass
class BackendResult:
    """One backend's sections, or why it could not be measured."""

    backend: str
    server: str = ""
    where: str = ""
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    memory: Memory | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Options:
    """What a run was asked to do."""

    n: int
    repeat: int
    warmup: int
    workloads: tuple[str, ...]
    lengths: tuple[int, ...]
    latency_sends: int
    latency_rounds: int


# -- tables -----------------------------------------------------------------------------

WORKLOAD_TEXT = {"no_tool": "the model answers", "async_tool": "one async tool call, then "
                 "the answer", "sync_tool": "one sync tool call (worker thread), then the answer"}

LEGEND = """\
floor: statements  power_loop's rows, transactions and statements (statement by
             statement: BEGIN, each statement, COMMIT) through the raw driver
floor: commits  the physical limit of the durable contract: one one-statement commit
             (an INSERT of the message row, autocommit) per durable write: two per
             no-tool send, four per one-tool send
x            power_loop's wall (cpu) time per send divided by the floor's
noise        interquartile range / median of the side's wall time over the rounds
wall, cpu    microseconds per send: wall time, and this process's CPU time (driver threads
             included; the database server's is not)
store        wall time inside Store calls (argument checks, transaction bodies, row decoding
             and the port); store cpu: this process's CPU time during them (SQLite's work
             included, a server's not); port: the part of the store's wall time in the
             Database port (taking a connection, BEGIN, statements, COMMIT: driver and
             database); loop: total - store, the loop's own work, ScriptedLLM and the tool
             included. Section 3: each send's median per round; sections 3 and 4: medians
             over the rounds. floor: the floor's wall time per send in section 1 (it does
             not depend on the history)
write txns   transactions per send holding an INSERT/UPDATE/DELETE, counted at the driver"""


def _target_rate(backend: str, workload: str, rate: float) -> str:
    goal = TARGET_RATES.get((backend, workload))
    if goal is None:
        return "-"
    return f">={goal:,} {'met' if rate >= goal else 'MISSED'}"


def _side_target(backend: str, case: Throughput, side: str) -> str:
    pl = case.rate("power_loop")
    if side == "power_loop":
        return _target_rate(backend, case.workload, pl)
    if case.workload != "no_tool":
        return "-"
    if side == "floor":
        x = case.cpu("power_loop") / case.cpu("floor")
        return f"cpu <={TARGET_CPU_X:g}x {'met' if x <= TARGET_CPU_X else 'MISSED'}"
    if backend != "postgresql":
        return "-"
    x = case.rate("commits") / pl
    return f"/s within {TARGET_COMMITS_X:g}x {'met' if x <= TARGET_COMMITS_X else 'MISSED'}"


def _throughput_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for case in result.throughput:
            pl_wall, pl_cpu = case.wall("power_loop"), case.cpu("power_loop")
            for side in SIDES:
                if not case.wall_us.get(side):
                    continue
                wall, cpu = case.wall(side), case.cpu(side)
                rows.append([result.backend, case.workload, SIDE_TEXT[side],
                             f"{case.rate(side):,.0f}", f"{wall:,.0f}", f"{cpu:,.0f}",
                             "" if side == "power_loop" else f"{pl_wall / wall:.2f}",
                             "" if side == "power_loop" else f"{pl_cpu / cpu:.2f}",
                             _side_target(result.backend, case, side),
                             f"{_noise(case.wall_us[side]):.0%}"])
    return rows


def _statement_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for case in result.throughput:
            for side in SIDES:
                counts = case.statements.get(side, {})
                detail = ", ".join(f"{name} {value:g}" for name, value in counts.items())
                writes = case.write_txns.get(side, 0.0)
                target = "-"
                if case.workload == "no_tool" and side == "power_loop":
                    met = "met" if writes <= TARGET_WRITE_TXNS else "MISSED"
                    target = f"<={TARGET_WRITE_TXNS} {met}"
                rows.append([result.backend, case.workload, side,
                             f"{sum(counts.values()):g}", f"{writes:g}",
                             f"{case.read_txns.get(side, 0.0):g}", target, detail])
    return rows


def _flat(ratio: float) -> str:
    return "flat" if ratio <= FLAT else "GROWS"


def _latency_rows(results: Sequence[BackendResult]) -> tuple[list[list[str]], list[str]]:
    rows, verdicts = [], []
    for result in results:
        by_workload: dict[str, list[Latency]] = {}
        for case in result.latency:
            by_workload.setdefault(case.workload, []).append(case)
        floors = {case.workload: f"{case.wall('floor'):,.0f}" for case in result.throughput}
        for workload, cases in by_workload.items():
            first = cases[0].warm_us("store")
            first_cpu = cases[0].warm_us("store_cpu")
            for case in cases:
                wall, cpu, store, store_cpu, port, loop = (case.warm_us(m) for m in METRICS)
                rows.append([result.backend, workload, f"{case.length:,}", f"{wall:,.0f}",
                             f"{store:,.0f}", f"{port:,.0f}", f"{loop:,.0f}",
                             f"{store / wall:.0%}", f"{store / first:.2f}", f"{cpu:,.0f}",
                             f"{store_cpu:,.0f}", f"{store_cpu / first_cpu:.2f}",
                             floors.get(workload, "-")])
            last = cases[-1]
            ratio = last.warm_us("store") / first
            first_cpu = cases[0].warm_us("store_cpu")
            cpu_ratio = last.warm_us("store_cpu") / first_cpu
            loop_first, loop_last = cases[0].warm_us("loop"), last.warm_us("loop")
            verdicts.append(
                f"  {result.backend} {workload}, {cases[0].length:,} -> {last.length:,} "
                f"messages: store wall {first:,.0f} -> {last.warm_us('store'):,.0f} us "
                f"x{ratio:.2f} {_flat(ratio)}; store cpu {first_cpu:,.0f} -> "
                f"{last.warm_us('store_cpu'):,.0f} us x{cpu_ratio:.2f} {_flat(cpu_ratio)}; "
                f"the loop's own time x{loop_last / loop_first:.2f}")
    return rows, verdicts


def _cold_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for case in result.latency:
            if case.workload != result.latency[0].workload:
                continue
            wall, cpu, store, store_cpu, port, loop = (case.cold_us(m) for m in METRICS)
            rows.append([result.backend, case.workload, f"{case.length:,}",
                         f"{wall / 1000:,.2f}", f"{store / 1000:,.2f}", f"{port / 1000:,.2f}",
                         f"{loop / 1000:,.2f}", f"{store / wall:.0%}",
                         f"{cpu / 1000:,.2f}", f"{store_cpu / 1000:,.2f}",
                         f"{wall / case.warm_us('wall'):.1f}"])
    return rows


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def _memory_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        mem = result.memory
        if mem is None:
            continue
        rows.append([result.backend, f"{mem.length:,}", _mb(mem.held),
                     f"{mem.held / max(mem.length, 1):,.0f}", _mb(mem.cold_peak),
                     _mb(mem.warm_peak), _mb(mem.max_rss)])
    return rows


def render(results: Sequence[BackendResult], facts: dict[str, str], opts: Options) -> str:
    """The report: machine header, one table per section, failures."""
    header = dict(facts)
    for result in results:
        header[result.backend] = (f"{result.server} at {result.where}" if result.server
                                  else result.where)
    header["model"] = "ScriptedLLM (offline, instant); the tool returns its argument"
    header["workloads"] = "; ".join(f"{w}: {WORKLOAD_TEXT[w]}" for w in opts.workloads)
    header["throughput"] = (f"{opts.n} sequential sends per timed run on one session (a new "
                            f"session per round, one untimed send to it first); median of "
                            f"{opts.repeat} rounds after {opts.warmup} warm-up sends per "
                            "workload and side")
    header["latency"] = (f"per history length and round: a session bulk-loaded beforehand "
                         f"(then a vacuum), a new loop's cold send, {WARM_UNTIMED} untimed "
                         f"sends, then {opts.latency_sends} timed warm sends (their median); "
                         f"median of {opts.latency_rounds} rounds; the Store is wrapped in "
                         "timers (bench/stopwatch.py), which add ~5%")
    width = max(len(k) for k in header)
    lines = ["power_loop loop benchmark: StatefulAgentLoop.send against the raw driver", ""]
    lines += [f"  {key:<{width}}  {value}" for key, value in header.items()]
    measured = [r for r in results if r.throughput]
    if measured:
        lines += ["", "1. sends per second, one session, warm loop, beside two floors",
                  render_table(
            ["backend", "workload", "side", "sends/s", "wall us", "cpu us",
             "power_loop wall x", "cpu x", "target", "noise"],
            _throughput_rows(measured), left=3)]
        lines += ["", "2. SQL per send, counted at the driver", render_table(
            ["backend", "workload", "side", "statements", "write txns", "read txns",
             "target", "by leading keyword"], _statement_rows(measured), left=3)]
    timed = [r for r in results if r.latency]
    if timed:
        rows, verdicts = _latency_rows(timed)
        lines += ["", "3. warm send by history length: where the time goes (us per send)",
                  render_table(["backend", "workload", "history", "total", "store", "port",
                                "loop", "store share", "store vs first", "cpu", "store cpu",
                                "vs first", "floor"], rows, left=2),
                  f"store time flat from the shortest to the longest history (target; "
                  f"'flat' = within x{FLAT}; on a busy machine the CPU figures are the "
                  "steadier):", *verdicts]
        lines += ["", "4. cold first send: a new loop (nothing cached), the whole history "
                  "read once (ms)", render_table(
                      ["backend", "workload", "history", "total", "store", "port", "loop",
                       "store share", "cpu", "store cpu", "x warm"], _cold_rows(timed),
                      left=2)]
    remembered = _memory_rows(results)
    if remembered:
        lines += ["", "5. memory (tracemalloc: Python allocations; max RSS: the whole process "
                  "so far), MB", render_table(
                      ["backend", "history", "held after cold send", "bytes/message",
                       "cold send peak", "warm send peak", "max RSS"], remembered)]
    if measured or timed:
        lines += ["", LEGEND]
    failed = [r for r in results if r.problem]
    if failed:
        lines += ["", "NOT MEASURED"]
        lines += [f"  {r.backend}: {r.problem}" for r in failed]
    return "\n".join(lines)


def as_json(results: Sequence[BackendResult], facts: dict[str, str], opts: Options) -> str:
    """The results, every round included, with the derived medians, as a JSON document."""
    backends = []
    for result in results:
        entry = asdict(result)
        for case, data in zip(result.throughput, entry["throughput"], strict=True):
            data["sends_per_second"] = {side: case.rate(side) for side in SIDES}
            data["ratio"] = case.rate("power_loop") / case.rate("floor")
            data["ratio_to_commits"] = case.rate("power_loop") / case.rate("commits")
            data["target_sends_per_second"] = TARGET_RATES.get((result.backend, case.workload))
        for timed, data in zip(result.latency, entry["latency"], strict=True):
            data["warm_median_us"] = {m: timed.warm_us(m) for m in METRICS}
            data["cold_median_us"] = {m: timed.cold_us(m) for m in METRICS}
        backends.append(entry)
    return json.dumps({
        "benchmark": "loop", "machine": facts, "config": asdict(opts),
        "targets": {"sends_per_second": {f"{b}/{w}": v for (b, w), v in TARGET_RATES.items()},
                    "write_transactions_per_no_tool_send": TARGET_WRITE_TXNS,
                    "store_time_flat_within": FLAT},
        "backends": backends,
    }, indent=2)
