"""``python -m bench worker``: timer fires through real ``power-loop worker`` processes.

For each backend, with 1 and 3 worker processes (``--workers``) and each poll interval
(``--polls``: 0.2 s and the default 1 s), one worker group is started
(:mod:`bench.worker_procs`; the application is :mod:`bench.worker_app`, a scripted model
that answers at once) on tables of its own. The groups take turns, a round each, for
``--rounds`` rounds; a round creates ``--sessions`` new sessions (every round fires into
equally short histories), starts the group's processes, runs two phases and stops them:

1. **Backlog** (throughput): ``--timers`` one-shot timers, spread over the sessions
   round-robin, due within 0.1 s starting a little after they are all scheduled (the
   workers are running and idle by then, so they all start together). Fires per second
   are counted over the middle 90% of the fires (5th to 95th percentile of the times
   they were recorded), which leaves out the start and the tail.
2. **Steady** (lateness): the benchmark schedules ``--lateness-rate`` timers a second for
   ``--lateness-window`` seconds, each due a random 0 to ``--max-delay`` seconds after it
   is scheduled, as an application would while the workers run: far from a backlog, so
   lateness shows how soon workers notice and fire a timer.

A fire's **lateness** is the database-clock time it was recorded (``created_at`` of the
send with request key ``timer:<id>:0``) minus the timer's ``due_at`` as scheduled. The
benchmark waits until every send of the phase has finished before going on.

Each worker process counts the SQL statements it sends and its CPU time; both are read
at the phase boundaries, so each phase has statements, transactions (``BEGIN``),
rollbacks (mostly a ``begin_send`` refused because another worker holds the session, then
retried) and worker CPU per fire, idle polling included.

Before the groups, a profile per backend (:mod:`bench.worker_profile`): one in-process
worker with concurrency 1 on a backlog of ``--profile-timers`` timers, its time per fire
split into claim, begin_send, advance, model, final write, other store calls, the rest
of the poll, and the loop's own work. After them, what one idle worker process (poll 1 s)
sends per second for ``--idle-seconds``: with nothing due, then with one due timer held
by the claim of a worker that died.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.machine import machine_facts
from bench.servers import Server, add_server_arguments, provision
from bench.worker_app import scripted_llm
from bench.worker_procs import (
    WorkerFailed,
    WorkerGroup,
    busy_between,
    machine_jiffies,
    time_limit,
)
from bench.worker_profile import profile_fires
from bench.worker_report import (
    BackendResult,
    Group,
    Idle,
    Options,
    Phase,
    Round,
    as_json,
    render,
)
from power_loop.store import Store, open_store
from power_loop.store.records import from_us, to_us
from power_loop.testing import drop_store_tables, fresh_prefix

DEFAULT_BACKENDS = ["sqlite", "postgresql"]
BACKLOG_WINDOW_US = 100_000
"""The backlog's timers are due over this long (microseconds): far faster than any
worker group fires them, so they queue up at once."""
SCHEDULING = 8
"""Timers scheduled at once while building a backlog (SQLite serialises them anyway)."""


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the database side ------------------------------------------------------------------


async def db_now_us(store: Store) -> int:
    """The database clock, in microseconds."""
    sql = store._database.dialect.render("SELECT {now}")
    async with store._database.transaction(write=False) as conn:
        row = await conn.fetchone(sql)
    assert row is not None
    return int(row[0])


async def finished_fires(store: Store) -> int:
    """Timer sends that have finished (any final status)."""
    sends = store._database.dialect.quote(f"{store.table_prefix}sends")
    sql = f"SELECT COUNT(*) FROM {sends} WHERE source = 'timer' AND status <> 'pending'"
    async with store._database.transaction(write=False) as conn:
        row = await conn.fetchone(sql)
    return 0 if row is None else int(row[0])


async def fire_times(store: Store) -> dict[str, int]:
    """Request key -> ``created_at`` (microseconds) of every timer send."""
    sends = store._database.dialect.quote(f"{store.table_prefix}sends")
    sql = f"SELECT request_key, created_at FROM {sends} WHERE source = 'timer'"
    async with store._database.transaction(write=False) as conn:
        rows = await conn.fetch(sql)
    return {str(r[0]): int(r[1]) for r in rows}


async def describe_server(store: Store) -> str:
    """The server's version and durability settings."""
    queries = {
        "sqlite": ("SQLite", "SELECT sqlite_version()",
                   ["PRAGMA journal_mode", "PRAGMA synchronous"], ["journal_mode", "synchronous"]),
        "postgresql": ("PostgreSQL", "SHOW server_version", ["SHOW fsync",
                       "SHOW synchronous_commit"], ["fsync", "synchronous_commit"]),
        "mysql": ("MySQL/MariaDB", "SELECT VERSION()",
                  ["SELECT @@innodb_flush_log_at_trx_commit"],
                  ["innodb_flush_log_at_trx_commit"]),
    }
    name, version_sql, setting_sqls, labels = queries[store.backend]
    async with store._database.transaction(write=False) as conn:
        version = await conn.fetchone(version_sql)
        settings = [await conn.fetchone(sql) for sql in setting_sqls]
    values = [str(row[0]) if row else "?" for row in settings]
    if store.backend == "sqlite":  # PRAGMA synchronous answers with a number
        values[1] = {"0": "off", "1": "normal", "2": "full", "3": "extra"}.get(values[1],
                                                                               values[1])
    shown = ", ".join(f"{label}={value}" for label, value in zip(labels, values, strict=True))
    return f"{name} {version[0] if version else '?'} ({shown})"


async def wait_until_finished(store: Store, group: WorkerGroup, expected: int,
                              seconds: float) -> None:
    """Until ``expected`` timer sends have finished (raises on a dead worker, or after
    ``seconds``)."""
    async with time_limit(seconds, f"firing {expected} timers"):
        while await finished_fires(store) < expected:
            group.check()
            await asyncio.sleep(0.1)


def _key(timer_id: str) -> str:
    return f"timer:{timer_id}:0"


# -- one round ---------------------------------------------------------------------------


async def backlog_phase(store: Store, group: WorkerGroup, sessions: Sequence[str],
                        opts: Options, *, poll: float, per_write: float,
                        done_before: int) -> tuple[float, float, float, Phase]:
    """Phase 1: fires/s over a backlog; also the seconds from due to the last fire and
    how late the scheduling finished (0 when it ended before the timers were due)."""
    # Due far enough ahead that scheduling is over, and every worker has polled since
    # the first timer was written, by then: they sleep until it is due, all together.
    lead_us = int((max(poll, 1.5 * per_write * opts.timers) + 0.3) * 1e6)
    start_us = await db_now_us(store) + lead_us
    gate = asyncio.Semaphore(SCHEDULING)
    due: dict[str, int] = {}

    async def schedule(i: int) -> None:
        at = start_us + i * BACKLOG_WINDOW_US // opts.timers
        async with gate:
            timer = await store.schedule_timer(sessions[i % len(sessions)], f"backlog {i}",
                                               at=from_us(at))
        due[timer.timer_id] = to_us(timer.due_at)

    await asyncio.gather(*(schedule(i) for i in range(opts.timers)))
    overrun = max(0.0, (await db_now_us(store) - start_us) / 1e6)
    before, machine = await group.snapshot(), machine_jiffies()
    await wait_until_finished(store, group, done_before + opts.timers,
                              120 + opts.timers / 5)
    phase = Phase.between(opts.timers, before, await group.snapshot(),
                          busy_between(machine, machine_jiffies()))
    times = await fire_times(store)
    fired = sorted(times[_key(t)] for t in due)
    low, high = int(0.05 * len(fired)), int(0.95 * len(fired)) - 1
    span = (fired[high] - fired[low]) / 1e6
    rate = (high - low) / span if span > 0 else float("nan")
    return rate, (fired[-1] - start_us) / 1e6, overrun, phase


async def steady_phase(store: Store, group: WorkerGroup, sessions: Sequence[str],
                       opts: Options, rng: random.Random,
                       done_before: int) -> tuple[list[float], Phase]:
    """Phase 2: timers scheduled at a steady rate while the workers run; lateness in ms."""
    count = max(1, round(opts.lateness_rate * opts.lateness_window))
    before = await group.snapshot()
    due: dict[str, int] = {}
    clock = asyncio.get_running_loop().time
    begin = clock()
    for i in range(count):
        await asyncio.sleep(max(0.0, begin + i / opts.lateness_rate - clock()))
        timer = await store.schedule_timer(sessions[i % len(sessions)], f"steady {i}",
                                           delay=rng.uniform(0.0, opts.max_delay))
        due[timer.timer_id] = to_us(timer.due_at)
    await wait_until_finished(store, group, done_before + count,
                              120 + opts.max_delay + count / 5)
    phase = Phase.between(count, before, await group.snapshot())
    times = await fire_times(store)
    return [(times[_key(t)] - d) / 1e3 for t, d in due.items()], phase


class GroupRun:
    """One worker group's tables and sessions, measured a round at a time.

    Each round starts worker processes of its own, so that the rounds of the groups can
    alternate: a burst of load on the shared machine then lands on several groups rather
    than on every round of one.
    """

    def __init__(self, backend: str, location: str, workers: int, poll: float,
                 opts: Options, workdir: Path) -> None:
        self.location, self.opts, self.workdir = location, opts, workdir
        self.result = Group(backend, workers, poll)
        self.rng = random.Random(f"{backend}/{workers}/{poll}")
        self.sessions: list[str] = []
        self.per_write = 0.0
        self.done = 0
        self._store: Store | None = None

    @property
    def name(self) -> str:
        g = self.result
        return f"{g.backend}, {g.workers} worker(s), poll {g.poll:g}s"

    async def open(self) -> None:
        """Fresh tables."""
        self._store = await open_store(self.location, table_prefix=fresh_prefix())

    async def new_sessions(self, store: Store) -> None:
        """Sessions for a round: new ones each time, so that every round fires into the
        same short histories (a fire costs more as its session's history grows)."""
        # Created as the backlog is scheduled (SCHEDULING at once): the time one write
        # takes tells how long scheduling the backlog will take.
        gate = asyncio.Semaphore(SCHEDULING)

        async def create() -> str:
            async with gate:
                return (await store.create_session()).id

        began = time.perf_counter()
        self.sessions = await asyncio.gather(*(create() for _ in range(self.opts.sessions)))
        self.per_write = (time.perf_counter() - began) / self.opts.sessions

    async def run_round(self, index: int) -> None:
        """Start the workers, run both phases, stop them; a failure ends the group."""
        g, store = self.result, self._store
        if g.problem or store is None:
            return
        group = WorkerGroup(g.workers, self.location, store.table_prefix, poll=g.poll,
                            concurrency=self.opts.concurrency,
                            directory=self.workdir / f"{g.backend}-{g.workers}-{g.poll:g}-{index}")
        try:
            await self.new_sessions(store)
            began = time.perf_counter()
            await group.start()
            startup = time.perf_counter() - began
            rate, drain, overrun, backlog = await backlog_phase(
                store, group, self.sessions, self.opts, poll=g.poll,
                per_write=self.per_write, done_before=self.done)
            self.done += backlog.fires
            lateness, steady = await steady_phase(store, group, self.sessions, self.opts,
                                                  self.rng, self.done)
            self.done += steady.fires
            stats = await group.stop()
        except WorkerFailed as exc:
            g.problem = f"round {index + 1}: {exc}"
            _progress(f"{self.name}: {g.problem}")
            return
        finally:
            await group.kill()
        g.rounds.append(Round(rate, drain, overrun, lateness, backlog, steady, startup, stats))

    async def close(self) -> None:
        """Drop the tables."""
        if self._store is not None:
            try:
                await drop_store_tables(self._store)
            finally:
                await self._store.aclose()


async def idle_costs(backend: str, location: str, workdir: Path, seconds: float) -> Idle:
    """What one worker (poll 1 s) sends while nothing is due, then while the only due
    timer is held by the claim of a worker that died (it stays held for the claim's
    30 s; here only ``seconds`` are watched)."""
    store = await open_store(location, table_prefix=fresh_prefix())
    group = WorkerGroup(1, location, store.table_prefix, poll=1.0, concurrency=4,
                        directory=workdir / f"{backend}-idle")
    try:
        sid = (await store.create_session()).id
        await group.start()
        before = await group.snapshot()
        await asyncio.sleep(seconds)
        idle = await group.snapshot() - before
        for _ in range(5):  # the live worker may claim the timer first: then again
            await store.schedule_timer(sid, "held by a dead worker", delay=0)
            if await store.claim_due_timers("bench-dead-worker", ttl=60, limit=1):
                break
        else:
            raise WorkerFailed("the live worker claimed every timer meant for the dead one")
        before = await group.snapshot()
        await asyncio.sleep(seconds)
        held = await group.snapshot() - before
        await group.stop()
    finally:
        try:
            await group.kill()
            await drop_store_tables(store)
        finally:
            await store.aclose()
    return Idle.of(seconds, idle, held)


# -- a backend ---------------------------------------------------------------------------


async def measure(backend: str, location: str, opts: Options, workdir: Path) -> BackendResult:
    """The in-process profile, then every worker group's rounds, alternating."""
    result = BackendResult(backend)
    probe = await open_store(location, table_prefix=fresh_prefix())
    try:
        result.server = await describe_server(probe)
        if opts.profile_timers:
            _progress(f"{backend}: profiling {opts.profile_timers} fires in-process")
            sessions = [(await probe.create_session()).id for _ in range(opts.sessions)]

            async def backlog(store: Store, count: int) -> None:
                for i in range(count):
                    await store.schedule_timer(sessions[i % len(sessions)], f"profile {i}",
                                               delay=0)

            result.profile = await profile_fires(probe, scripted_llm(), opts.profile_timers,
                                                 backlog)
    finally:
        try:
            await drop_store_tables(probe)
        finally:
            await probe.aclose()
    runs = [GroupRun(backend, str(workdir / f"worker-{w}-{p:g}.db") if backend == "sqlite"
                     else location, w, p, opts, workdir)
            for w in opts.workers for p in opts.polls]
    try:
        for run in runs:
            await run.open()
        for round_ in range(opts.rounds):
            for run in runs:
                _progress(f"{run.name}: round {round_ + 1}/{opts.rounds}")
                await run.run_round(round_)
    finally:
        for run in runs:
            await run.close()
    result.groups = [run.result for run in runs]
    if opts.idle_seconds:
        where = str(workdir / "idle.db") if backend == "sqlite" else location
        _progress(f"{backend}: an idle worker, {opts.idle_seconds:g}s twice")
        try:
            result.idle = await idle_costs(backend, where, workdir, opts.idle_seconds)
        except WorkerFailed as exc:
            result.idle_problem = str(exc)
    return result


async def measure_all(backends: Sequence[str], servers: dict[str, Server], workdir: Path,
                      opts: Options) -> list[BackendResult]:
    """Measure each backend in turn; a failure is recorded and the next one still runs."""
    results: list[BackendResult] = []
    for backend in backends:
        if backend == "sqlite":
            where = "temporary files, power_loop's default options"
            location = str(workdir / "profile.db")
        else:
            server = servers[backend]
            where = server.address
            if server.dsn is None:
                results.append(BackendResult(backend, where=where, problem=server.problem))
                continue
            location = server.dsn
        try:
            result = await measure(backend, location, opts, workdir)
        except Exception as exc:
            _progress(f"{backend}: failed: {type(exc).__name__}: {exc}")
            result = BackendResult(backend, problem=f"the run failed: {type(exc).__name__}: {exc}")
        result.where = where
        results.append(result)
    return results


# -- command line ------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _list(kind: type[int] | type[float]) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(sorted({kind(v) for v in text.split(",") if v.strip()}))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not values or values[0] <= 0:
            raise argparse.ArgumentTypeError("values must be more than 0")
        return values

    return parse


def main(argv: list[str]) -> int:
    """Run the benchmark; exit status 1 when a backend or group could not be measured."""
    parser = argparse.ArgumentParser(
        prog="python -m bench worker",
        description="Timer fires through real `power-loop worker` processes: fires per "
                    "second over a backlog, lateness at a steady rate, with 1 and 3 "
                    "workers and two poll intervals; and where a fire's time goes.")
    parser.add_argument("--timers", type=_positive, default=1000,
                        help="backlog timers per round (default: %(default)s)")
    parser.add_argument("--sessions", type=_positive, default=100,
                        help="sessions the timers are spread over (default: %(default)s)")
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="rounds per worker group; figures are medians, lateness "
                             "percentiles pool the rounds (default: %(default)s)")
    parser.add_argument("--workers", type=_list(int), default=(1, 3),
                        help="worker processes per group, comma-separated (default: 1,3)")
    parser.add_argument("--polls", type=_list(float), default=(0.2, 1.0),
                        help="worker --poll values, seconds (default: 0.2,1)")
    parser.add_argument("--concurrency", type=_positive, default=4,
                        help="each worker's --concurrency (default: %(default)s)")
    parser.add_argument("--lateness-rate", type=_seconds, default=10.0,
                        help="timers scheduled per second in the steady phase "
                             "(default: %(default)s)")
    parser.add_argument("--lateness-window", type=_seconds, default=5.0,
                        help="seconds the steady phase schedules for (default: %(default)s)")
    parser.add_argument("--max-delay", type=_seconds, default=2.0,
                        help="steady timers are due 0 to this many seconds after being "
                             "scheduled (default: %(default)s)")
    parser.add_argument("--profile-timers", type=int, default=300,
                        help="fires in the in-process profile, 0 to skip "
                             "(default: %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="seconds an idle worker is watched, twice (nothing due; a "
                             "timer held by a dead worker), 0 to skip (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of the tables")
    add_server_arguments(parser)
    parser.set_defaults(backends=DEFAULT_BACKENDS)
    args = parser.parse_args(argv)
    opts = Options(timers=args.timers, sessions=args.sessions, rounds=args.rounds,
                   workers=tuple(int(w) for w in args.workers),
                   polls=tuple(float(p) for p in args.polls), concurrency=args.concurrency,
                   lateness_rate=args.lateness_rate, lateness_window=args.lateness_window,
                   max_delay=args.max_delay, profile_timers=max(0, args.profile_timers),
                   idle_seconds=max(0.0, args.idle_seconds))
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(args.backends, pg_dsn=args.pg_dsn, mysql_dsn=args.mysql_dsn) as servers:
        results = asyncio.run(measure_all(args.backends, servers, Path(tmp), opts))
    failed = [r.problem for r in results if r.problem]
    failed += [r.idle_problem for r in results if r.idle_problem]
    failed += [g.problem for r in results for g in r.groups if g.problem]
    if args.json:
        print(as_json(results, facts, opts))
        for problem in failed:
            _progress(f"NOT MEASURED: {problem}")
    else:
        print(render(results, facts, opts))
    return 1 if failed else 0
