"""Sinks: every event to a JSONL file (and back with replay), OpenTelemetry spans and
Prometheus metrics when their extras are installed, and a broken sink that changes
nothing for the send.

    python examples/observability.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from _common import data_dir

from power_loop import (
    AgentLoopConfig,
    Event,
    JsonlSink,
    MissingDriverError,
    OtelSink,
    PrometheusSink,
    ScriptedLLM,
    StatefulAgentLoop,
    call_tool,
    close_sinks,
    replay,
    reply,
    sink_stats,
    tool,
)
from power_loop.events.sinks import Sink


@tool(safe_to_repeat=True)
def stock(item: str) -> int:
    """Units of an item in stock."""
    return {"widget": 42}.get(item, 0)


class Broken:
    """A sink with a bug: it raises on every event. The sends never notice (it is
    logged once, at WARNING, and counted)."""

    def __repr__(self) -> str:
        return "Broken()"

    def handle(self, event: Event) -> None:
        raise RuntimeError("this sink is broken")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Extras:
    """The OpenTelemetry and Prometheus sinks, if their extras are installed."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.exporter: Any = None
        self.registry: Any = None
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            self.exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.sinks.append(OtelSink(tracer_provider=provider))
        except (ImportError, MissingDriverError) as exc:
            print(f"(no OpenTelemetry spans: {exc})")
        try:
            from prometheus_client import CollectorRegistry

            self.registry = CollectorRegistry()
            self.sinks.append(PrometheusSink(registry=self.registry))
        except (ImportError, MissingDriverError) as exc:
            print(f"(no Prometheus metrics: {exc})")

    def show(self) -> None:
        if self.exporter is not None:
            print("\nspans:")
            for span in self.exporter.get_finished_spans():
                attributes = span.attributes or {}
                detail = attributes.get("gen_ai.usage.output_tokens", attributes.get(
                    "gen_ai.tool.name", attributes.get("power_loop.stop_reason", "")))
                print(f"  {span.name:<20} {detail}")
        if self.registry is not None:
            from prometheus_client import generate_latest

            print("\nmetrics (some):")
            for line in generate_latest(self.registry).decode().splitlines():
                if line.startswith(("power_loop_sends_total", "power_loop_tokens_total",
                                    "power_loop_tool_calls_total")):
                    print("  " + line)


async def main() -> None:
    where = data_dir("observability")
    jsonl, broken = JsonlSink(where / "events.jsonl"), Broken()
    extras = Extras()
    llm = ScriptedLLM([call_tool("stock", {"item": "widget"}), reply("42 widgets in stock.")])
    config = AgentLoopConfig(sinks=[jsonl, broken, *extras.sinks])
    async with StatefulAgentLoop(llm=llm, dsn=str(where / "app.db"), tools=[stock],
                                 config=config) as loop:
        sid = await loop.new_session()
        result = await loop.send("How many widgets?", session_id=sid)
    print("answer:", result.final_text)
    await close_sinks()  # flushes every sink, then closes it (also done at exit)

    print("\nreplayed from", jsonl.path.name)
    for event in replay(jsonl.path):
        print(f"  #{event.seq:<4} {event.type}")
    print(f"\nthe broken sink: {sink_stats(broken)}")

    extras.show()


if __name__ == "__main__":
    asyncio.run(main())
