"""Sinks: where a loop's and a worker's events go, without ever slowing them.

Give sinks to a loop with ``AgentLoopConfig(sinks=[...])`` (and to a worker with
``Worker(sinks=[...])``). Each sink is fed from its own bounded queue by its own
thread: one that raises or blocks is isolated, reported once and counted
(:func:`sink_stats`). Shipped: :class:`JsonlSink` (with :func:`replay`),
:class:`OtelSink` (extra ``otel``), :class:`PrometheusSink` (extra ``prometheus``) and
:class:`MemorySink` for tests. Importing this package imports neither SDK.
"""

from power_loop.events.sinks._codec import SCHEMA_VERSION, decode_event, encode_event
from power_loop.events.sinks._feed import (
    SinkStats,
    check_sinks,
    close_sinks,
    flush_sinks,
    sink_feed,
    sink_stats,
)
from power_loop.events.sinks._jsonl import JsonlSink, replay
from power_loop.events.sinks._otel import OtelSink
from power_loop.events.sinks._prometheus import PrometheusSink
from power_loop.events.sinks._sink import MemorySink, Sink

__all__ = [
    "SCHEMA_VERSION",
    "JsonlSink",
    "MemorySink",
    "OtelSink",
    "PrometheusSink",
    "Sink",
    "SinkStats",
    "check_sinks",
    "close_sinks",
    "decode_event",
    "encode_event",
    "flush_sinks",
    "replay",
    "sink_feed",
    "sink_stats",
]
