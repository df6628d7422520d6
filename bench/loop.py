"""``python -m bench loop``: agent sends through ``StatefulAgentLoop``, beside a floor.

For each backend, with ``ScriptedLLM`` (no network) as the model:

1. **Throughput**: ``--n`` sequential ``loop.send`` calls on one session with a warm
   loop, in three workloads: ``no_tool`` (the model answers), ``async_tool`` and
   ``sync_tool`` (the model calls one trivial tool, async or sync, then answers). Beside
   it two floors (:mod:`bench.send_floor`): the same rows in the same transactions,
   statement by statement, through the raw driver; and the physical limit of the durable
   contract, one one-statement commit per durable write (two per no-tool send). Each
   round starts a new session (one untimed send, so that the loop has it cached),
   rotating which side goes first; figures are medians over ``--repeat`` rounds.
2. **SQL per send**: an untimed pass counts, at the driver (:mod:`bench.statements`),
   the statements of each send and how they group into transactions.
3. **History length**: sessions holding ``--lengths`` messages (10, 1,000, 10,000:
   user/assistant pairs bulk-inserted with ``Store.append_messages``), each sent to by a
   new loop (a cold first send, which reads the whole history), then ``--latency-sends``
   warm sends. A :class:`~bench.stopwatch.TimedStore` splits each send's wall time into
   the store's share (and, inside it, the ``Database`` port's) and the loop's own.
4. **Memory**: one more 10,000-message session under ``tracemalloc``: what the cold
   send leaves held (the loop's cached history), its peak, and the warm sends' peak.

Wall time is noisy on a shared machine: the CPU time of this process (driver threads
included) is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.loop_report import (
    METRICS,
    SIDES,
    WARM_UNTIMED,
    BackendResult,
    Latency,
    Memory,
    Options,
    Throughput,
    as_json,
    render,
)
from bench.machine import machine_facts
from bench.send_floor import (
    CommitFloor,
    SendFloor,
    SendShape,
    open_commit_floor,
    open_send_floor,
)
from bench.servers import Server, add_server_arguments, provision
from bench.statements import trace_statements, transactions
from bench.stopwatch import Stopwatch, TimedStore
from power_loop import StatefulAgentLoop, Tool, tool
from power_loop.llm.messages import Message, encode_message
from power_loop.llm.scripted import ScriptedLLM, Turn, call_tool, reply
from power_loop.llm.service import LLMRequest
from power_loop.store import NewMessage, Store, open_store
from power_loop.testing import drop_store_tables, fresh_prefix

WORKLOADS = ("no_tool", "async_tool", "sync_tool")
LATENCY_WORKLOADS = ("no_tool", "async_tool")
DEFAULT_BACKENDS = ["sqlite", "postgresql"]
DEFAULT_N = 200
DEFAULT_REPEAT = 9
DEFAULT_WARMUP = 100
DEFAULT_LENGTHS = (10, 1_000, 10_000)
DEFAULT_LATENCY_SENDS = 50
DEFAULT_LATENCY_ROUNDS = 7
COUNTED_SENDS = 20
"""Sends per workload and side in the statement-counting pass."""
TEXT = "What is the status of order 1042, and when will it ship?"
"""What the user sends."""
PAIR = ("Summarise the attached meeting notes in three bullet points and keep the action "
        "items with their owners.",
        "Here is the summary: the launch moves to March, Dana owns the pricing page, and "
        "the budget review needs a decision before Friday.")
"""A user/assistant exchange, repeated to build long histories (~150-byte texts)."""


# -- the agent --------------------------------------------------------------------------


async def lookup(key: str) -> str:
    """Look a key up (a trivial async tool: returns the key)."""
    return key


def lookup_sync(key: str) -> str:
    """Look a key up (a trivial sync tool, run in a worker thread by power_loop)."""
    return key


def _answer(request: LLMRequest) -> Turn:
    return reply("ok")


def _one_tool(request: LLMRequest) -> Turn:
    if request.messages[-1].role == "user":
        return call_tool("lookup", {"key": "k"})
    return reply("ok")


class _Forgetful(list[LLMRequest]):
    """``ScriptedLLM.requests`` that keeps nothing: a real client drops each request
    once answered, while the fake keeps them all (a 10,000-message history each)."""

    def append(self, item: LLMRequest) -> None:
        pass


def make_loop(workload: str, store: Store) -> StatefulAgentLoop:
    """A loop on ``store`` whose model answers as ``workload`` says."""
    llm = ScriptedLLM(_answer if workload == "no_tool" else _one_tool)
    llm.requests = _Forgetful()
    tools: list[Tool] = []
    if workload == "async_tool":
        tools = [tool(lookup)]
    elif workload == "sync_tool":
        tools = [tool(name="lookup")(lookup_sync)]
    return StatefulAgentLoop(llm=llm, store=store, tools=tools)


def history(length: int) -> list[NewMessage]:
    """``length`` valid messages: user/assistant text pairs as the codec stores them.

    Each pair carries the send index it would have had (``i // 2``), so the history
    groups into sends as a real one does; the sends table has no rows for them, which
    nothing on the send path reads.
    """
    user = encode_message(Message.user(PAIR[0]))
    answer = encode_message(Message.assistant(
        PAIR[1], stop_reason="end_turn", model="scripted",
        usage={"input_tokens": 900, "output_tokens": 40, "cache_read_tokens": 0,
               "cache_write_tokens": 0}))
    return [NewMessage(i // 2, "user" if i % 2 == 0 else "assistant",
                       user if i % 2 == 0 else answer) for i in range(length)]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def shape_of(store: Store, session_id: str) -> SendShape:
    """The rows of the session's last send, for the floor to write the same."""
    send = (await store.list_sends(session_id))[-1]
    records = [r for r in await store.read_messages(session_id, from_seq=send.first_seq)
               if r.send_index == send.send_index]
    bodies = [(r.role, _json(r.body)) for r in records]
    return SendShape(user=bodies[0][1], appends=tuple(bodies[1:-1]), answer=bodies[-1][1],
                     stop_reason=send.stop_reason or "", rounds=send.rounds,
                     usage=_json(send.usage), source=send.source)


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- measuring --------------------------------------------------------------------------


async def timed_run(send: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """``n`` sequential sends: wall and CPU microseconds per send."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await send()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall * 1e6 / n, cpu * 1e6 / n


class Sides:
    """Both sides of a workload, each able to start a session and send to it."""

    def __init__(self, loop: StatefulAgentLoop, floor: SendFloor, commits: CommitFloor,
                 shape: SendShape) -> None:
        self.loop, self.floor, self.commits, self.shape = loop, floor, commits, shape

    async def session(self, side: str) -> Callable[[], Awaitable[object]]:
        """A new session with one send made (a warm loop has it cached): its sender."""
        if side == "power_loop":
            loop, sid = self.loop, await self.loop.new_session()

            async def send() -> object:
                return await loop.send(TEXT, sid)
        elif side == "floor":
            floor, shape, sid = self.floor, self.shape, await self.floor.new_session()

            async def send() -> object:
                await floor.send(sid, shape)
                return None
        else:
            commits, shape, sid = self.commits, self.shape, await self.commits.new_session()

            async def send() -> object:
                await commits.send(sid, shape)
                return None
        await send()
        return send


async def measure_throughput(store: Store, floor: SendFloor, commits: CommitFloor,
                             opts: Options) -> list[Throughput]:
    """Sections 1 and 2: sends per second per side, then SQL per send."""
    sides: dict[str, Sides] = {}
    for workload in opts.workloads:
        _progress(f"{store.backend}: {workload}: warming up")
        loop = make_loop(workload, store)
        sid = await loop.new_session()
        for _ in range(opts.warmup):
            await loop.send(TEXT, sid)
        sides[workload] = Sides(loop, floor, commits, await shape_of(store, sid))
        for side in SIDES[1:]:
            floor_send = await sides[workload].session(side)
            for _ in range(opts.warmup):
                await floor_send()
    results = [Throughput(w) for w in opts.workloads]
    for round_ in range(opts.repeat):
        _progress(f"{store.backend}: throughput round {round_ + 1}/{opts.repeat}")
        order = SIDES[round_ % len(SIDES):] + SIDES[:round_ % len(SIDES)]
        for result in results:
            for side in order:
                send = await sides[result.workload].session(side)
                wall, cpu = await timed_run(send, opts.n)
                result.wall_us[side].append(wall)
                result.cpu_us[side].append(cpu)
    for result in results:
        for side in SIDES:
            send = await sides[result.workload].session(side)
            with trace_statements() as trace:
                for _ in range(COUNTED_SENDS):
                    await send()
            counts: dict[str, float] = {}
            for _, name in trace:
                counts[name] = counts.get(name, 0) + 1 / COUNTED_SENDS
            txns = transactions(trace)
            result.statements[side] = counts
            result.write_txns[side] = txns.writing / COUNTED_SENDS
            result.read_txns[side] = txns.reading / COUNTED_SENDS
    return results


async def _measured_send(loop: StatefulAgentLoop, sid: str, watch: Stopwatch) -> list[float]:
    """One send's microseconds, in :data:`METRICS` order."""
    watch.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    await loop.send(TEXT, sid)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return [wall * 1e6, cpu * 1e6, watch.store * 1e6, watch.store_cpu * 1e6,
            watch.port * 1e6, (wall - watch.store) * 1e6]


async def _long_session(store: Store, length: int) -> str:
    sid = (await store.create_session()).id
    if length:
        await store.append_messages(sid, history(length))
    return sid


Sessions = dict[tuple[int, str, int], str]
"""(round, workload, history length) -> a session holding that many messages."""


async def build_sessions(store: Store, opts: Options) -> tuple[Sessions, str]:
    """Every long session sections 3 to 5 use, then a vacuum, before anything is timed.

    Built up front so that the bulk loads (and the server's reaction to them: WAL
    checkpoints, autovacuum) do not land in the middle of the timed sends.
    """
    workloads = [w for w in LATENCY_WORKLOADS if w in opts.workloads] or ["no_tool"]
    _progress(f"{store.backend}: loading the sessions of histories {opts.lengths}")
    sessions = {(r, w, n): await _long_session(store, n)
                for r in range(opts.latency_rounds) for w in workloads for n in opts.lengths}
    for_memory = await _long_session(store, max(opts.lengths))
    await store.vacuum()
    return sessions, for_memory


async def measure_latency(store: Store, sessions: Sessions, opts: Options) -> list[Latency]:
    """Sections 3 and 4: cold and warm sends at each history length, store time apart."""
    watch = Stopwatch()
    timed = TimedStore(store._database, store.table_prefix, watch)
    results = {(w, n): Latency(w, n) for _, w, n in sessions}
    cases = list(results.items())
    for round_ in range(opts.latency_rounds):
        _progress(f"{store.backend}: history-length round {round_ + 1}/{opts.latency_rounds}")
        # Rotate the order, so that drift on a shared machine does not always favour the
        # same history length.
        shift = round_ % len(cases)
        for (workload, length), result in cases[shift:] + cases[:shift]:
            sid = sessions[round_, workload, length]
            loop = make_loop(workload, timed)  # a new loop: nothing cached
            gc.collect()
            cold = await _measured_send(loop, sid, watch)
            for metric, value in zip(METRICS, cold, strict=True):
                result.cold[metric].append(value)
            for _ in range(WARM_UNTIMED):
                await loop.send(TEXT, sid)
            samples = [await _measured_send(loop, sid, watch)
                       for _ in range(opts.latency_sends)]
            for metric, values in zip(METRICS, zip(*samples, strict=True), strict=True):
                result.warm[metric].append(statistics.median(values))
    return list(results.values())


async def measure_memory(store: Store, sid: str, opts: Options) -> Memory:
    """Section 5: traced memory of a cold send then warm sends on the longest session."""
    length = max(opts.lengths)
    _progress(f"{store.backend}: memory at {length:,} messages")
    loop = make_loop("no_tool", store)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await loop.send(TEXT, sid)
        held, cold_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(opts.latency_sends):
            await loop.send(TEXT, sid)
        warm_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return Memory(length, held - before, cold_peak - before, warm_peak - held, max_rss)


async def measure(backend: str, location: str, floor_location: str,
                  opts: Options) -> BackendResult:
    """Every section on one backend (tables dropped afterwards)."""
    result = BackendResult(backend)
    store = await open_store(location, table_prefix=fresh_prefix())
    try:
        floor = await open_send_floor(backend, floor_location, fresh_prefix())
        result.server = floor.server
        try:
            commits = await open_commit_floor(backend, floor_location, fresh_prefix())
            try:
                result.throughput = await measure_throughput(store, floor, commits, opts)
            finally:
                await commits.close()
        finally:
            await floor.close()
        sessions, for_memory = await build_sessions(store, opts)
        result.latency = await measure_latency(store, sessions, opts)
        result.memory = await measure_memory(store, for_memory, opts)
    finally:
        try:
            await drop_store_tables(store)
        finally:
            await store.aclose()
    return result


async def measure_all(backends: Sequence[str], servers: dict[str, Server], workdir: Path,
                      opts: Options) -> list[BackendResult]:
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
            result = await measure(backend, location, floor_location, opts)
        except Exception as exc:
            _progress(f"{backend}: failed: {type(exc).__name__}: {exc}")
            result = BackendResult(backend, problem=f"the run failed: {type(exc).__name__}: {exc}")
        result.where = where
        results.append(result)
    return results


# -- command line -----------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(w.strip() for w in text.split(",") if w.strip())
        unknown = [w for w in chosen if w not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}")
        return chosen

    return parse


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError("lengths are message counts of 0 or more")
    return values


def main(argv: list[str]) -> int:
    """Run the benchmark; exit status 1 when a backend could not be measured."""
    parser = argparse.ArgumentParser(
        prog="python -m bench loop",
        description="Agent sends through StatefulAgentLoop (ScriptedLLM): sends per second "
                    "beside a raw-driver floor, SQL statements and transactions per send, "
                    "latency by history length with the store's share, a cold send, memory.")
    parser.add_argument("--n", type=_positive, default=DEFAULT_N,
                        help="sends per timed throughput run (default: %(default)s)")
    parser.add_argument("--repeat", type=_positive, default=DEFAULT_REPEAT,
                        help="throughput rounds; figures are medians (default: %(default)s)")
    parser.add_argument("--warmup", type=_positive, default=DEFAULT_WARMUP,
                        help="warm-up sends per workload and side (default: %(default)s)")
    parser.add_argument("--workloads", type=_choices(WORKLOADS), default=WORKLOADS,
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--lengths", type=_lengths, default=DEFAULT_LENGTHS,
                        help="history lengths in messages (default: 10,1000,10000)")
    parser.add_argument("--latency-sends", type=_positive, default=DEFAULT_LATENCY_SENDS,
                        help="warm sends timed per history length and round "
                             "(default: %(default)s)")
    parser.add_argument("--latency-rounds", type=_positive, default=DEFAULT_LATENCY_ROUNDS,
                        help="history-length rounds, each on new sessions "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of the tables")
    parser.add_argument("--sinks", action="store_true",
                        help="instead: what each sink (JSONL, OpenTelemetry, Prometheus, a "
                             "blocked one) adds to a SQLite no-tool send (bench/loop_sinks.py)")
    add_server_arguments(parser)
    parser.set_defaults(backends=DEFAULT_BACKENDS)
    args = parser.parse_args(argv)
    if args.sinks:
        from bench.loop_sinks import run

        with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp:
            return run(Path(tmp), args.n, args.repeat, args.warmup)
    opts = Options(n=args.n, repeat=args.repeat, warmup=args.warmup, workloads=args.workloads,
                   lengths=args.lengths, latency_sends=args.latency_sends,
                   latency_rounds=args.latency_rounds)
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(args.backends, pg_dsn=args.pg_dsn, mysql_dsn=args.mysql_dsn) as servers:
        results = asyncio.run(measure_all(args.backends, servers, Path(tmp), opts))
    if args.json:
        print(as_json(results, facts, opts))
        for result in results:
            if result.problem:
                _progress(f"{result.backend} NOT MEASURED: {result.problem}")
    else:
        print(render(results, facts, opts))
    return 1 if any(r.problem for r in results) else 0
