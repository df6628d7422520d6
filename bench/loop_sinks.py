"""``python -m bench loop --sinks``: what each sink adds to a SQLite no-tool send.

One warm loop per side sends ``--n`` times to a new session; the timed window ends only
when every sink has handled every event (``flush_sinks``), so the sinks' own threads are
inside it, and the CPU time (this process, all threads) is the whole cost. Sides:

* ``none``: no sink (the reference);
* ``memory``: :class:`~power_loop.MemorySink`, which only keeps the events: the cost of
  the hand-over itself (queue, wake-up, thread);
* ``jsonl``: :class:`~power_loop.JsonlSink` to a file;
* ``otel``: :class:`~power_loop.OtelSink` on an SDK ``TracerProvider`` with the SDK's
  ``BatchSpanProcessor`` and an exporter that discards the spans (the export itself is
  the application's choice);
* ``otel-api``: :class:`~power_loop.OtelSink` on the API's no-op tracer provider (no
  SDK): the sink's own share of ``otel``, the rest is the SDK's;
* ``jsonl+otel``: both (the target: at most +10% over ``none``), and ``jsonl+otel-api``:
  both, the spans going nowhere (the sinks' own share of the target);
* ``prometheus``: :class:`~power_loop.PrometheusSink` on its own registry;
* ``blocked``: a sink blocked for the whole run (its queue fills, then drops): a send
  never waits for it; the window ends without it.

Beside them, the floors: the same rows in the same transactions through the raw driver
(:mod:`bench.send_floor`), and what the two target sinks cannot go below whoever writes
them: ``jsonl-write``, the same lines (already built as dicts) through orjson into a
file, and ``otel-sdk``, the same spans with the same attributes made straight on the
SDK (same provider set-up), with no power_loop in between. Rounds rotate the order of
the sides; figures are medians.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.machine import machine_facts, render_table
from bench.send_floor import open_send_floor
from power_loop import (
    AgentLoopConfig,
    Event,
    JsonlSink,
    MemorySink,
    OtelSink,
    PrometheusSink,
    ScriptedLLM,
    SendFinished,
    StatefulAgentLoop,
    flush_sinks,
    reply,
)
from power_loop.events.sinks import Sink
from power_loop.store import Store, open_store
from power_loop.testing import fresh_prefix

SIDES = ("none", "memory", "jsonl", "otel-api", "otel", "jsonl+otel-api", "jsonl+otel",
         "prometheus", "blocked")
TEXT = "What is the status of order 1042, and when will it ship?"


class _Blocked:
    """A sink stuck in its first event until the run ends."""

    queue_size = 1_000

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle(self, event: Event) -> None:
        self.release.wait()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _otel() -> OtelSink:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return OtelSink(tracer_provider=provider)


def sinks_for(side: str, workdir: Path, blocked: _Blocked) -> list[Sink]:
    """The sinks of one side (new objects, so each side has its own queues)."""
    from opentelemetry.trace import NoOpTracerProvider
    from prometheus_client import CollectorRegistry

    makers: dict[str, Callable[[], Sink]] = {
        "memory": MemorySink,
        "jsonl": lambda: JsonlSink(workdir / f"events-{time.monotonic_ns()}.jsonl"),
        "otel": _otel,
        "otel-api": lambda: OtelSink(tracer_provider=NoOpTracerProvider()),
        "prometheus": lambda: PrometheusSink(registry=CollectorRegistry()),
        "blocked": lambda: blocked,
    }
    return [makers[part]() for part in side.split("+") if part != "none"]


async def timed(send: Callable[[], Awaitable[object]], n: int,
                sinks: Sequence[Sink]) -> tuple[float, float]:
    """``n`` sends, then until the sinks caught up: wall and CPU microseconds per send."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await send()
    if sinks:
        await flush_sinks(*sinks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall * 1e6 / n, cpu * 1e6 / n


async def measure(workdir: Path, n: int, repeat: int, warmup: int) -> dict[str, list[float]]:
    store: Store = await open_store(str(workdir / "power_loop.db"), table_prefix=fresh_prefix())
    floor = await open_send_floor("sqlite", str(workdir / "floor.db"), fresh_prefix())
    blocked = _Blocked()
    results: dict[str, list[float]] = {}
    try:
        loops: dict[str, tuple[StatefulAgentLoop, list[Sink]]] = {}
        for side in SIDES:
            sinks = sinks_for(side, workdir, blocked)
            loop = StatefulAgentLoop(llm=ScriptedLLM(lambda _: reply("ok")), store=store,
                                     config=AgentLoopConfig(sinks=sinks))
            sid = await loop.new_session()
            for _ in range(warmup):
                await loop.send(TEXT, sid)
            loops[side] = (loop, [s for s in sinks if s is not blocked])
        from bench.loop import shape_of

        shape = await shape_of(store, sid)
        for round_ in range(repeat):
            print(f"bench: sinks round {round_ + 1}/{repeat}", file=sys.stderr, flush=True)
            order = [*SIDES[round_ % len(SIDES):], *SIDES[:round_ % len(SIDES)], "floor"]
            for side in order:
                if side == "floor":
                    fsid = await floor.new_session()

                    async def floor_send(fsid: str = fsid) -> None:
                        await floor.send(fsid, shape)

                    wall, cpu = await timed(floor_send, n, [])
                else:
                    loop, sinks = loops[side]
                    sid = await loop.new_session()
                    await loop.send(TEXT, sid)

                    async def send(loop: StatefulAgentLoop = loop, sid: str = sid) -> None:
                        await loop.send(TEXT, sid)

                    wall, cpu = await timed(send, n, sinks)
                results.setdefault(f"{side}:wall", []).append(wall)
                results.setdefault(f"{side}:cpu", []).append(cpu)
        memory = loops["memory"][1][0]
        assert isinstance(memory, MemorySink)
        sent = sum(isinstance(e, SendFinished) for e in memory.events)
        results.update(sink_floors(memory.events, sent, workdir, repeat))
    finally:
        blocked.release.set()
        await floor.close()
        await store.aclose()
    return results


def sink_floors(events: Sequence[Event], sends: int, workdir: Path, repeat: int,
                ) -> dict[str, list[float]]:
    """CPU microseconds per send of the two floors (see the module's docstring)."""
    import orjson
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from power_loop.events.sinks import encode_event

    lines = [encode_event(e) for e in events]
    captured = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(captured))
    sink = OtelSink(tracer_provider=provider)
    for event in events:
        sink.handle(event)
    finished = sorted(captured.get_finished_spans(), key=lambda s: s.start_time or 0)
    ids = {s.context.span_id: n for n, s in enumerate(finished) if s.context is not None}
    # (name, kind, attributes, start, end, the parent's place in the list or -1)
    spans = [(s.name, s.kind, dict(s.attributes or {}), s.start_time, s.end_time,
              ids.get(s.parent.span_id, -1) if s.parent is not None else -1)
             for s in finished]
    ends = sorted(range(len(spans)), key=lambda n: spans[n][4] or 0)
    tracer = _otel()._tracer  # the provider and processor the ``otel`` side has
    from opentelemetry import trace
    results: dict[str, list[float]] = {}
    for _ in range(repeat):
        gc.collect()
        cpu = time.process_time()
        with open(workdir / f"floor-{time.monotonic_ns()}.jsonl", "ab") as file:
            for line in lines:
                file.write(orjson.dumps(line) + b"\n")
            file.flush()
        results.setdefault("jsonl-write:cpu", []).append(
            (time.process_time() - cpu) * 1e6 / sends)
        gc.collect()
        cpu = time.process_time()
        made: list[Any] = []
        for name, kind, attributes, start, _, parent in spans:
            context = trace.set_span_in_context(made[parent]) if parent >= 0 else None
            made.append(tracer.start_span(name, context=context, kind=kind,
                                          attributes=attributes, start_time=start))
        for n in ends:
            made[n].end(end_time=spans[n][4])
        results.setdefault("otel-sdk:cpu", []).append((time.process_time() - cpu) * 1e6 / sends)
    return results


def render(results: dict[str, list[float]], n: int, repeat: int) -> str:
    base_cpu = statistics.median(results["none:cpu"])
    base_wall = statistics.median(results["none:wall"])
    rows = []
    for side in (*SIDES, "floor"):
        cpu, wall = (statistics.median(results[f"{side}:{k}"]) for k in ("cpu", "wall"))
        added = "" if side in ("none", "floor") else f"{(cpu - base_cpu) / base_cpu:+.1%}"
        rows.append([side, f"{cpu:,.0f}", f"{cpu - base_cpu:+,.0f}" if side != "none" else "",
                     added, f"{wall:,.0f}", f"{(wall - base_wall) / base_wall:+.1%}"
                     if side not in ("none", "floor") else ""])
    for floor in ("jsonl-write", "otel-sdk"):
        cpu = statistics.median(results[f"{floor}:cpu"])
        rows.append([f"floor: {floor}", f"{cpu:,.0f}", "", f"{cpu / base_cpu:+.1%}", "", ""])
    facts = machine_facts()
    head = "\n".join(f"{k}: {v}" for k, v in facts.items())
    table = render_table(["side", "CPU us/send", "vs none", "CPU added", "wall us/send",
                          "wall added"], rows)
    return (f"{head}\n\nSinks on a SQLite no-tool send ({n} sends x {repeat} rounds, medians; "
            "the window ends when every sink has handled every event; CPU is this "
            "process, all threads; the machine is shared, so trust CPU over wall)\n\n"
            f"{table}\n\nfloor: the same rows through the raw driver (the physical limit). "
            "floor: jsonl-write: the same lines, already built, through orjson into a file; "
            "floor: otel-sdk: the same spans and attributes straight on the SDK (its CPU "
            "added is what the spans alone cost, whoever makes them). "
            "Target: jsonl+otel adds at most 10% CPU to none.")


def run(workdir: Path, n: int, repeat: int, warmup: int) -> int:
    """The ``--sinks`` section of ``python -m bench loop``."""
    results = asyncio.run(measure(workdir, n, repeat, warmup))
    print(render(results, n, repeat))
    return 0
