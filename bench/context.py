"""``python -m bench context``: a long session with folding, and whether a send stays flat.

For each backend, one session of ``--sends`` sends (5,000 by default) through a warm
``StatefulAgentLoop`` with ``ProjectedRepresentation()`` and
``AgenticFold(keep_last_sends=4)`` under a small ``context_budget_tokens``, so the
history is folded every few dozen sends. The model is a ``ScriptedLLM`` function script
(:class:`ContextModel`): a send gets a short answer, every tenth one a ``lookup`` tool
call first; a fold gets a ``note_add`` (and a ``note_delete`` once the notes are many),
then ``write_summary``.

Each send is timed (wall and this process's CPU), with the time spent inside Store calls
(:class:`~bench.stopwatch.TimedStore`), and the size of its first request: messages, and
input tokens as the loop estimates them (``power_loop.context.tokens``: the request's
messages, tools and system prompt). Windows of ``--window`` sends ending at 100, 1,000
and 5,000 sends (those within ``--sends``, and ``--sends`` itself) summarise them. During
each window a young session sends one for one with the long one, so that the two meet the
same machine load: long / young is the growth, free of the load's drift over the run.
Flat figures are the point. At the end, a new loop (nothing cached) sends once: a cold
send reads only what the latest fold left unfolded. Results and output are in
:mod:`bench.context_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.context_report import BackendResult, Checkpoint, Sample, Window, as_json, render
from bench.machine import machine_facts
from bench.servers import Server, add_server_arguments, provision
from bench.stopwatch import Stopwatch, TimedStore
from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    LLMRequest,
    NoteLimits,
    ProjectedRepresentation,
    ScriptedLLM,
    StatefulAgentLoop,
    Turn,
    Usage,
    call_tool,
    call_tools,
    reply,
    tool,
)
from power_loop.context.tokens import EstimatingCounter, count_messages, count_tools
from power_loop.llm.scripted import ScriptedCall
from power_loop.store import Store, open_store
from power_loop.testing import drop_store_tables, fresh_prefix

DEFAULT_BACKENDS = ["sqlite", "postgresql"]
DEFAULT_SENDS = 5_000
DEFAULT_WINDOW = 100
DEFAULT_WARMUP = 100
"""Untimed sends on a session of their own first (connections, caches, statements)."""
DEFAULT_BUDGET = 1_500
"""Input tokens: with the tools (~400), the summary and the notes, a fold every ~25 sends."""
CHECKPOINTS = (100, 1_000, 5_000)
KEEP_LAST_SENDS = 4
TOOL_EVERY = 10
"""Every tenth send, the model calls ``lookup`` before answering."""
NOTES_KEPT = 6
"""A fold deletes the oldest note once there are this many (notes stay bounded)."""
_NOTE_LINE = re.compile(r"^#(\d+): ", re.MULTILINE)
_COUNTER = EstimatingCounter()


def estimate(request: LLMRequest) -> int:
    """Input tokens of ``request`` as the loop estimates them (uncalibrated)."""
    return (count_messages(_COUNTER, request.messages) + count_tools(_COUNTER, request.tools)
            + _COUNTER.count_text(request.system or ""))


class ContextModel:
    """The scripted model: answers sends and folds, and notes what it was asked.

    ``first`` is the (estimated tokens, messages) of the first request since it was
    last reset to ``None``: the bench resets it before each send.
    """

    def __init__(self) -> None:
        self.send_calls = 0
        self.fold_calls = 0
        self.first: tuple[int, int] | None = None

    def __call__(self, request: LLMRequest) -> Turn:
        tokens = estimate(request)
        # Reporting the estimate as the provider's count keeps the loop's calibration at 1.
        usage = Usage(input_tokens=tokens, output_tokens=30)
        meta = request.metadata
        if meta.get("purpose") == "fold":
            self.fold_calls += 1
            return self._fold(request, int(meta.get("fold_index", 0)), usage)
        self.send_calls += 1
        if self.first is None:
            self.first = (tokens, len(request.messages))
        last = request.messages[-1]
        if last.role == "tool":
            return reply(f"Done: {last.tool_results[0].content}.", usage=usage)
        index = int(meta.get("send_index", 0))
        if index % TOOL_EVERY == TOOL_EVERY - 1:
            # Ids unique in the session, as a real provider's are.
            call = ScriptedCall("lookup", {"key": f"item-{index}"}, id=f"call_{index}")
            return Turn(tool_calls=(call,), usage=usage)
        return reply(f"Noted item {index}; it is on the list with the others.", usage=usage)

    @staticmethod
    def _fold(request: LLMRequest, fold_index: int, usage: Usage) -> Turn:
        if request.tools and request.metadata.get("round", 0) == 0:
            prompt = request.messages[0].text
            notes = prompt.partition("Current notes:\n")[2].partition("\n\n")[0]
            ids = [int(i) for i in _NOTE_LINE.findall(notes)]
            calls: list[tuple[str, dict[str, object]]] = []
            if len(ids) >= NOTES_KEPT:
                calls.append(("note_delete", {"note_id": ids[0]}))
            calls.append(("note_add", {"text": f"fold {fold_index}: items are tracked in "
                                               "order; lookups answer with their value"}))
            return call_tools(*calls, usage=usage)
        summary = (f"Fold {fold_index}: the user asks to keep track of numbered items, one per "
                   "message, and now and then to look one up; every item was noted.")
        if not request.tools or request.tool_choice == "none":
            return reply(summary, usage=usage)
        return call_tool("write_summary", {"summary": summary}, usage=usage)


@tool(safe_to_repeat=True)
async def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: What to look up.
    """
    return f"value of {key}"


class _Forgetful(list[LLMRequest]):
    """``ScriptedLLM.requests`` that keeps nothing (a real client keeps no requests)."""

    def append(self, item: LLMRequest) -> None:
        pass


def make_loop(store: Store, model: ContextModel, budget: int) -> StatefulAgentLoop:
    """The loop under test: projected sends, agentic folds, notes."""
    llm = ScriptedLLM(model)
    llm.requests = _Forgetful()
    config = AgentLoopConfig(representation=ProjectedRepresentation(),
                             fold_strategy=AgenticFold(keep_last_sends=KEEP_LAST_SENDS),
                             context_budget_tokens=budget, notes=NoteLimits())
    return StatefulAgentLoop(llm=llm, store=store, tools=[lookup], config=config)


def checkpoints(sends: int) -> list[int]:
    """Where windows end: 100, 1,000, 5,000 (those within ``sends``) and ``sends``."""
    return sorted({c for c in CHECKPOINTS if c <= sends} | {sends})


# -- measuring --------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def text_of(index: int) -> str:
    return f"Please keep track of item {index} (batch {index // 50}) for the report."


async def server_of(store: Store) -> str:
    """The server's version and durability settings, read through the store's port."""
    name, *settings = {
        "sqlite": ("SQLite", "journal_mode", "synchronous"),
        "postgresql": ("PostgreSQL", "fsync", "synchronous_commit"),
        "mysql": ("MySQL/MariaDB", "innodb_flush_log_at_trx_commit"),
    }[store.backend]
    queries = {
        "sqlite": ["SELECT sqlite_version()", *(f"PRAGMA {s}" for s in settings)],
        "postgresql": ["SHOW server_version", *(f"SHOW {s}" for s in settings)],
        "mysql": ["SELECT VERSION()", *(f"SELECT @@{s}" for s in settings)],
    }[store.backend]
    values = []
    async with store._database.transaction(write=False) as conn:
        for sql in queries:
            row = await conn.fetchone(sql)
            values.append(str(row[0]) if row else "?")
    shown = ", ".join(f"{n}={v}" for n, v in zip(settings, values[1:], strict=True))
    return f"{name} {values[0]} ({shown})"


class Session:
    """A session of the benchmark and its measured sends."""

    def __init__(self, loop: StatefulAgentLoop, model: ContextModel, watch: Stopwatch,
                 session_id: str) -> None:
        self.loop, self.model, self.watch, self.id = loop, model, watch, session_id
        self.samples: list[Sample] = []

    async def send(self) -> Sample:
        model, watch = self.model, self.watch
        model.first = None
        sends_before, folds_before = model.send_calls, model.fold_calls
        watch.reset()
        cpu, wall = time.process_time(), time.perf_counter()
        await self.loop.send(text_of(len(self.samples)), self.id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tokens, messages = model.first or (0, 0)
        sample = Sample(wall * 1e6, cpu * 1e6, watch.store * 1e6, tokens, messages,
                        model.send_calls - sends_before, model.fold_calls - folds_before)
        self.samples.append(sample)
        return sample


async def run_session(loop: StatefulAgentLoop, model: ContextModel, watch: Stopwatch,
                      sends: int, window: int, warmup: int) -> tuple[Session, list[Checkpoint]]:
    """The long session; a young one beside it during each checkpoint's window."""
    warm = Session(loop, model, watch, await loop.new_session())
    for _ in range(warmup):
        await warm.send()
    long = Session(loop, model, watch, await loop.new_session())
    ends = checkpoints(sends)
    starts: dict[int, int] = {}
    for previous, end in zip([0, *ends], ends, strict=False):
        starts[max(previous, end - window)] = end  # windows never overlap
    found: list[Checkpoint] = []
    young: Session | None = None
    for index in range(sends):
        if index in starts:
            young = Session(loop, model, watch, await loop.new_session())
        if young is None:
            await long.send()
        else:
            # One for one, taking turns at going first: both see the same machine.
            pair = (long, young) if index % 2 == 0 else (young, long)
            for session in pair:
                await session.send()
            if index + 1 in ends:
                count = len(young.samples)
                found.append(Checkpoint(Window.of(long.samples[-count:], index + 2 - count),
                                        Window.of(young.samples, 1)))
                young = None
        if (index + 1) % 1_000 == 0:
            _progress(f"{loop.store.backend}: {index + 1:,} sends")
    return long, found


async def measure(backend: str, location: str, sends: int, window: int, budget: int,
                  warmup: int) -> BackendResult:
    """One long session on one backend (its tables dropped afterwards)."""
    result = BackendResult(backend, sends=sends)
    store = await open_store(location, table_prefix=fresh_prefix())
    try:
        result.server = await server_of(store)
        watch = Stopwatch()
        timed = TimedStore(store._database, store.table_prefix, watch)
        model = ContextModel()
        gc.collect()
        start = time.perf_counter()
        long, result.checkpoints = await run_session(make_loop(timed, model, budget), model,
                                                     watch, sends, window, warmup)
        result.seconds = time.perf_counter() - start
        result.folds = sum(1 for f in await store.list_folds(long.id) if f.status == "done")
        result.fold_calls = sum(s.fold_calls for s in long.samples)
        result.send_calls = sum(s.send_calls for s in long.samples)
        result.notes = len(await store.list_notes(long.id))
        timed.window_cache.clear()  # the store's cache is shared by its loops: empty it
        cold = await Session(make_loop(timed, model, budget), model, watch, long.id).send()
        result.cold_wall_us, result.cold_store_us = cold.wall_us, cold.store_us
        result.cold_tokens = cold.tokens
    finally:
        try:
            await drop_store_tables(store)
        finally:
            await store.aclose()
    return result


async def measure_all(backends: Sequence[str], servers: dict[str, Server], workdir: Path,
                      sends: int, window: int, budget: int,
                      warmup: int) -> list[BackendResult]:
    """Each backend in turn; a failure is recorded and the next one still runs."""
    results: list[BackendResult] = []
    for backend in backends:
        if backend == "sqlite":
            where, location = "a temporary file, power_loop's default options", str(
                workdir / "context.db")
        else:
            server = servers[backend]
            where = server.address
            if server.dsn is None:
                results.append(BackendResult(backend, where=where, problem=server.problem))
                continue
            location = server.dsn
        _progress(f"{backend}: {sends:,} sends")
        try:
            result = await measure(backend, location, sends, window, budget, warmup)
        except Exception as exc:
            _progress(f"{backend}: failed: {type(exc).__name__}: {exc}")
            result = BackendResult(backend, problem=f"the run failed: {type(exc).__name__}: {exc}")
        result.where = where
        results.append(result)
    return results


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str]) -> int:
    """Run the benchmark; exit status 1 when a backend could not be measured."""
    parser = argparse.ArgumentParser(
        prog="python -m bench context",
        description="A long session with ProjectedRepresentation + AgenticFold: per-send "
                    "latency, store share and request size at 100, 1,000 and 5,000 sends; "
                    "folds and fold model calls.")
    parser.add_argument("--sends", type=_positive, default=DEFAULT_SENDS,
                        help="sends in the session (default: %(default)s)")
    parser.add_argument("--window", type=_positive, default=DEFAULT_WINDOW,
                        help="sends per summarised window (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help="untimed sends on a session of their own first "
                             "(default: %(default)s)")
    parser.add_argument("--budget", type=_positive, default=DEFAULT_BUDGET,
                        help="context_budget_tokens (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of the tables")
    add_server_arguments(parser)
    parser.set_defaults(backends=DEFAULT_BACKENDS)
    args = parser.parse_args(argv)
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="power-loop-bench-") as tmp, \
            provision(args.backends, pg_dsn=args.pg_dsn, mysql_dsn=args.mysql_dsn) as servers:
        results = asyncio.run(measure_all(args.backends, servers, Path(tmp), args.sends,
                                          args.window, args.budget, args.warmup))
    if args.json:
        config = {"sends": args.sends, "window": args.window, "budget_tokens": args.budget,
                  "warmup": args.warmup, "keep_last_sends": KEEP_LAST_SENDS,
                  "tool_every": TOOL_EVERY, "notes_kept": NOTES_KEPT}
        print(as_json(results, facts, config))
        for result in results:
            if result.problem:
                _progress(f"{result.backend} NOT MEASURED: {result.problem}")
    else:
        workload = (f"one session, {args.sends:,} sends; ProjectedRepresentation() + "
                    f"AgenticFold(keep_last_sends={KEEP_LAST_SENDS}), context_budget_tokens="
                    f"{args.budget:,}, notes on; ScriptedLLM: short answers, a tool call every "
                    f"{TOOL_EVERY} sends; {args.warmup} untimed sends on another session first")
        print(render(results, facts, workload=workload, window=args.window))
    return 1 if any(r.problem for r in results) else 0
