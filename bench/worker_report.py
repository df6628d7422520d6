"""The results of ``python -m bench worker`` and how they are printed (tables or JSON)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bench.machine import render_table
from bench.worker_procs import Snapshot
from bench.worker_profile import ORDER, Profile

_OPENS = ("BEGIN", "START")
"""Leading keywords that open a transaction (MySQL: ``START TRANSACTION``)."""


@dataclass(frozen=True)
class Options:
    """What the run was asked to do."""

    timers: int
    sessions: int
    rounds: int
    workers: tuple[int, ...]
    polls: tuple[float, ...]
    concurrency: int
    lateness_rate: float
    lateness_window: float
    max_delay: float
    profile_timers: int
    idle_seconds: float


@dataclass
class Phase:
    """One phase of one round, summed over the worker processes."""

    fires: int
    statements: dict[str, int]
    """Statements sent during the phase, by leading keyword."""
    cpu_seconds: float
    """The workers' CPU time during the phase (threads included)."""
    machine_busy: float = math.nan
    """The whole machine's busy share of its CPU time during the phase (NaN: unknown)."""

    @classmethod
    def between(cls, fires: int, before: Snapshot, after: Snapshot,
                machine_busy: float = math.nan) -> Phase:
        spent = after - before
        return cls(fires, {k: v for k, v in spent.statements.items() if v}, spent.cpu_seconds,
                   machine_busy)

    def per_fire(self) -> dict[str, float]:
        """Statements, transactions, rollbacks and CPU milliseconds per fire."""
        per = 1 / max(self.fires, 1)
        counts = self.statements
        return {"statements": sum(counts.values()) * per,
                "transactions": sum(counts.get(k, 0) for k in _OPENS) * per,
                "rollbacks": counts.get("ROLLBACK", 0) * per,
                "cpu_ms": self.cpu_seconds * 1e3 * per,
                "machine_busy": self.machine_busy}


@dataclass
class Round:
    """Both phases of one round."""

    fires_per_second: float
    """Backlog fires per second over the middle 90% of the fires."""
    drain_seconds: float
    """From the first backlog timer's due time to the last fire."""
    overrun_seconds: float
    """How long after the first due time scheduling the backlog ended (0: before)."""
    lateness_ms: list[float]
    """Each steady-phase fire's lateness, milliseconds."""
    backlog: Phase
    steady: Phase
    startup_seconds: float
    """From starting the worker processes to every one having built its loop."""
    worker_stats: list[dict[str, int]]
    """Each process's ``WorkerStats`` at exit."""

    def top_share(self) -> float:
        """The busiest process's share of the round's fires."""
        fired = [s.get("timers_fired", 0) for s in self.worker_stats]
        return max(fired) / sum(fired) if sum(fired) else math.nan


@dataclass
class Group:
    """One backend, worker count and poll interval: its rounds."""

    backend: str
    workers: int
    poll: float
    rounds: list[Round] = field(default_factory=list)
    problem: str | None = None

    def rate(self) -> float:
        return statistics.median(r.fires_per_second for r in self.rounds)

    def rate_noise(self) -> float:
        """(largest - smallest) / median of the rounds' fires per second."""
        rates = [r.fires_per_second for r in self.rounds]
        return (max(rates) - min(rates)) / statistics.median(rates) if len(rates) > 1 else 0.0

    def lateness(self) -> list[float]:
        return sorted(x for r in self.rounds for x in r.lateness_ms)

    def per_fire(self, phase: str) -> dict[str, float]:
        """Medians over the rounds of the phase's per-fire figures."""
        rows = [(r.backlog if phase == "backlog" else r.steady).per_fire() for r in self.rounds]
        return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


@dataclass
class Idle:
    """Per second, what an idle worker process sent and spent."""

    seconds: float
    nothing_due: dict[str, float]
    """Statements, transactions and CPU milliseconds per second, nothing being due."""
    held_due: dict[str, float]
    """The same while the only due timer is held by a dead worker's claim."""

    @classmethod
    def of(cls, seconds: float, nothing: Snapshot, held: Snapshot) -> Idle:
        def rates(spent: Snapshot) -> dict[str, float]:
            counts = spent.statements
            return {"statements": sum(counts.values()) / seconds,
                    "transactions": sum(counts.get(k, 0) for k in _OPENS) / seconds,
                    "cpu_ms": spent.cpu_seconds * 1e3 / seconds}

        return cls(seconds, rates(nothing), rates(held))


@dataclass
class BackendResult:
    """One backend's groups and profile, or why it could not be measured."""

    backend: str
    server: str = ""
    where: str = ""
    groups: list[Group] = field(default_factory=list)
    profile: Profile | None = None
    idle: Idle | None = None
    idle_problem: str | None = None
    problem: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted ``values``, linearly interpolated."""
    if not values:
        return math.nan
    position = (len(values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


# -- text --------------------------------------------------------------------------------

LEGEND = """\
fires/s     backlog fires per second, all workers together, over the middle 90% of the
            fires; median of the rounds
noise       (largest - smallest) / median of the rounds' fires/s
stmts, txns SQL statements (BEGIN and COMMIT included) and transactions per fire, sent
            by the workers during the phase (idle polls included); median of the rounds
retries     ROLLBACKs per fire: a begin_send refused (session held by another fire),
            retried after a pause
cpu ms      the workers' CPU milliseconds per fire (their driver threads included; the
            database server's not)
busy        the whole machine's CPU busy share during the backlog (every process on it,
            the database server's and other work's included)
top share   the busiest worker process's share of a round's fires (both phases); median
lateness    created_at of the fire's send minus the timer's due_at (database clock),
            percentiles over every round's steady fires pooled; p50 by round: the range
            of the rounds' medians"""


def _group_label(g: Group) -> list[str]:
    return [g.backend, str(g.workers), f"{g.poll:g}"]


def _backlog_row(g: Group) -> list[str]:
    f = g.per_fire("backlog")
    share = statistics.median(r.top_share() for r in g.rounds)
    return [*_group_label(g), f"{g.rate():,.0f}", f"{g.rate_noise():.0%}",
            f"{f['statements']:.1f}", f"{f['transactions']:.1f}", f"{f['rollbacks']:.2f}",
            f"{f['cpu_ms']:.2f}", f"{f['machine_busy']:.0%}", f"{share:.0%}"]


def _steady_row(g: Group) -> list[str]:
    late = g.lateness()
    f = g.per_fire("steady")
    medians = [statistics.median(r.lateness_ms) for r in g.rounds if r.lateness_ms]
    by_round = f"{min(medians):.0f}-{max(medians):.0f}" if medians else "-"
    return [*_group_label(g), str(len(late)), f"{percentile(late, 50):.1f}",
            f"{percentile(late, 90):.1f}", f"{percentile(late, 99):.1f}", f"{late[-1]:.1f}",
            by_round, f"{f['statements']:.1f}", f"{f['transactions']:.1f}",
            f"{f['cpu_ms']:.2f}"]


_STAGE_TEXT = {
    "claim": "claim (claim_due_timers)",
    "begin_send": "begin_send (lease + fire recorded)",
    "advance": "advance (advance_timer)",
    "model": "model (ScriptedLLM)",
    "final write": "final write (_finish_send_txn)",
    "other store": "other store calls (reads)",
    "poll": "rest of the polls (next_due, stranded)",
}


def _profile_table(results: Sequence[BackendResult]) -> str:
    profiled = [r for r in results if r.profile is not None]
    headers = ["per fire"]
    for r in profiled:
        headers += [f"{r.backend} ms", "calls"]
    rows: list[list[str]] = []
    for stage in ORDER:
        row = [_STAGE_TEXT[stage]]
        for r in profiled:
            assert r.profile is not None
            row += [f"{r.profile.stage_ms[stage]:.3f}", f"{r.profile.stage_calls[stage]:.2f}"]
        rows.append(row)
    extra: list[tuple[str, list[str]]] = [
        ("loop and worker (the rest)", [f"{r.profile.rest_ms:.3f}" for r in profiled
                                        if r.profile]),
        ("total, wall", [f"{r.profile.wall_ms:.3f}" for r in profiled if r.profile]),
        ("total, CPU of the process", [f"{r.profile.cpu_ms:.3f}" for r in profiled
                                       if r.profile]),
    ]
    for label, values in extra:
        rows.append([label, *(cell for v in values for cell in (v, ""))])
    statements = ["statements (transactions)"]
    for r in profiled:
        assert r.profile is not None
        s = r.profile.statements
        opens = sum(s.get(k, 0) for k in _OPENS)
        statements += [f"{sum(s.values()):.1f} ({opens:.1f})", ""]
    rows.append(statements)
    return render_table(headers, rows)


def _issues(g: Group) -> str:
    totals: dict[str, int] = {}
    for r in g.rounds:
        for stats in r.worker_stats:
            for name, value in stats.items():
                if name != "timers_fired" and value:
                    totals[name] = totals.get(name, 0) + value
    return ", ".join(f"{name} {value}" for name, value in sorted(totals.items()))


def render(results: Sequence[BackendResult], facts: dict[str, str], opts: Options) -> str:
    """The report: machine header, the tables, failures."""
    header = dict(facts)
    for result in results:
        header[result.backend] = (f"{result.server} at {result.where}" if result.server
                                  else result.where)
    steady = round(opts.lateness_rate * opts.lateness_window)
    header["workload"] = (
        f"`power-loop worker --concurrency {opts.concurrency}` processes, ScriptedLLM "
        f"answering at once; {opts.sessions} sessions; per round a backlog of "
        f"{opts.timers} one-shot timers due within 0.1 s, then {steady} timers scheduled at "
        f"{opts.lateness_rate:g}/s, each due 0-{opts.max_delay:g} s ahead; "
        f"{opts.rounds} rounds per group")
    width = max(len(k) for k in header)
    lines = ["power_loop worker benchmark: timer fires through `power-loop worker` "
             "processes", ""]
    lines += [f"  {key:<{width}}  {value}" for key, value in header.items()]
    groups = [g for r in results for g in r.groups if g.rounds and not g.problem]
    if groups:
        lines += ["", f"backlog: {opts.timers} timers due at once (throughput)", render_table(
            ["backend", "workers", "poll s", "fires/s", "noise", "stmts", "txns", "retries",
             "cpu ms", "busy", "top share"], [_backlog_row(g) for g in groups], left=1)]
        lines += ["", f"steady: {opts.lateness_rate:g} timers/s due 0-{opts.max_delay:g} s "
                  "after scheduling (lateness, ms)", render_table(
                      ["backend", "workers", "poll s", "fires", "p50", "p90", "p99", "max",
                       "p50 by round", "stmts", "txns", "cpu ms"],
                      [_steady_row(g) for g in groups], left=1)]
        lines += ["", LEGEND]
    if any(r.profile for r in results):
        lines += ["", f"where a fire's time goes: one in-process Worker, concurrency 1, "
                  f"a backlog of {opts.profile_timers} timers (ms and calls per fire)",
                  _profile_table(results)]
    idle = [r for r in results if r.idle]
    if idle:
        lines += ["", "an idle worker process (poll 1 s), per second", render_table(
            ["backend", "due", "statements", "transactions", "cpu ms"],
            [[r.backend, label, f"{rates['statements']:,.0f}",
              f"{rates['transactions']:,.0f}", f"{rates['cpu_ms']:,.0f}"]
             for r in idle if r.idle
             for label, rates in (("nothing", r.idle.nothing_due),
                                  ("one, held by a dead worker", r.idle.held_due))],
            left=2)]
    issues = [f"  {g.backend}, {g.workers} worker(s), poll {g.poll:g}s: {text}"
              for g in groups if (text := _issues(g))]
    if issues:
        lines += ["", "worker counters other than fires (WorkerStats, all rounds)", *issues]
    failed = [(r.backend, r.problem) for r in results if r.problem]
    failed += [(f"{r.backend}, idle worker", r.idle_problem) for r in results
               if r.idle_problem]
    failed += [(f"{g.backend}, {g.workers} worker(s), poll {g.poll:g}s", g.problem)
               for r in results for g in r.groups if g.problem]
    if failed:
        lines += ["", "NOT MEASURED"]
        lines += [f"  {name}: {problem}" for name, problem in failed]
    return "\n".join(lines)


# -- JSON --------------------------------------------------------------------------------


def as_json(results: Sequence[BackendResult], facts: dict[str, str], opts: Options) -> str:
    """The results, every round and every lateness sample included, as a JSON document."""
    backends = []
    for result in results:
        entry = asdict(result)
        for group, data in zip(result.groups, entry["groups"], strict=True):
            if not group.rounds:
                continue
            late = group.lateness()
            data["summary"] = {
                "fires_per_second": group.rate(), "noise": group.rate_noise(),
                "backlog_per_fire": group.per_fire("backlog"),
                "steady_per_fire": group.per_fire("steady"),
                "lateness_ms": {f"p{q}": percentile(late, q) for q in (50, 90, 99)}
                | {"max": late[-1] if late else math.nan},
            }
        if result.profile is not None:
            entry["profile"]["rest_ms"] = result.profile.rest_ms
        backends.append(entry)
    return json.dumps({"benchmark": "worker", "machine": facts, "config": asdict(opts),
                       "backends": backends}, indent=2)
