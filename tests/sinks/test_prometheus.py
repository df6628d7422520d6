"""``PrometheusSink``: metrics scraped from a real registry after real sends."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conformance.waiting import eventually
from power_loop import (
    Event,
    FoldError,
    FoldFailed,
    FoldFinished,
    FoldStarted,
    LLMUnavailableError,
    PrometheusSink,
    RoundFinished,
    RoundStarted,
    ScriptedLLM,
    SendFailed,
    SendFinished,
    SendResult,
    SendStarted,
    Store,
    ToolCallFinished,
    Usage,
    UsageUpdated,
    call_tool,
    fail,
    flush_sinks,
    reply,
)
from power_loop.events import (
    LeaseWait,
    SessionParked,
    TimerFired,
    TimerParked,
    TimerSkipped,
    WorkerClaimed,
    WorkerLostLease,
    WorkerReleased,
)
from tests.sinks.support import loop_with
from tests.sinks.test_isolation import add
from tests.workers.inproc import Agent, running, utcnow, worker

METRICS = {
    "power_loop_sends_started": ("source", "resumed"),
    "power_loop_sends": ("status", "stop_reason"),
    "power_loop_send_duration_seconds": ("outcome",),
    "power_loop_send_rounds": (),
    "power_loop_model_calls": ("provider", "model", "stop_reason"),
    "power_loop_model_call_duration_seconds": ("provider", "model"),
    "power_loop_tokens": ("kind", "purpose"),
    "power_loop_tool_calls": ("tool", "outcome"),
    "power_loop_tool_call_duration_seconds": ("tool",),
    "power_loop_errors": ("stage", "code"),
    "power_loop_folds": ("outcome",),
    "power_loop_fold_duration_seconds": (),
    "power_loop_timer_fires": ("outcome",),
    "power_loop_timer_lateness_seconds": (),
    "power_loop_worker_claims": ("kind",),
    "power_loop_worker_releases": ("kind",),
    "power_loop_worker_lost_leases": ("kind",),
    "power_loop_sessions_parked": (),
    "power_loop_lease_waits": ("reason",),
}
"""Every metric and its labels: what docs/observability.md promises (names are stable)."""


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry as a scraper reads it: (sample name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def one_of_each() -> list[Event]:
    """An event of every kind the sink counts, for one send that folds and fails."""
    usage = Usage(input_tokens=5, output_tokens=1, cache_read_tokens=2, cache_write_tokens=3)
    at: dict[str, Any] = {"session_id": "s", "send_index": 0}
    return [
        SendStarted(**at, source="user"), FoldStarted(**at, fold_index=0, first_send=0,
                                                      end_send=1, strategy="summary"),
        FoldFinished(**at, fold_index=0, end_send=1, summary="", notes_written=0,
                     usage=usage),
        FoldStarted(**at, fold_index=1, first_send=1, end_send=2, strategy="summary"),
        FoldFailed(**at, fold_index=1, error=FoldError("no")),
        RoundStarted(**at, round=1, model="m", provider="p"),
        UsageUpdated(**at, usage=usage, total=usage),
        RoundFinished(**at, round=1, stop_reason="end_turn", tool_calls=0),
        ToolCallFinished(**at, call_id="c", name="t", output="", is_error=False,
                         duration=0.5),
        SendFinished(**at, result=SendResult("s", 0, "", usage, 1, "end_turn")),
        SendStarted(session_id="s", send_index=1, source="timer"),
        SendFailed(session_id="s", send_index=1, code="llm_timeout", error_type="X",
                   message=""),
        TimerFired(session_id="s", timer_id="t", fire=0, lateness=0.2),
        TimerSkipped(session_id="s", timer_id="t", fire=1, lateness=70.0),
        TimerParked(session_id="s", timer_id="t", reason="r"),
        WorkerClaimed(session_id="s", worker="w", kind="timer", key="k"),
        WorkerReleased(session_id="s", worker="w", kind="timer", key="k", reason="r"),
        WorkerLostLease(session_id="s", worker="w", kind="session", key="k"),
        SessionParked(session_id="s", attempts=5),
        LeaseWait(session_id="s", holder="h", reason="holder_gone", expires_in=1.0,
                  wait_limit=None),
    ]


def test_the_metric_names_and_labels_are_the_documented_ones() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry=registry)
    for event in one_of_each():
        sink.handle(event)
    labels: dict[str, set[tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names = tuple(sorted(k for k in sample.labels if k != "le"))
                labels.setdefault(family.name, set()).add(names)
    assert set(labels) == set(METRICS), "a metric was added, renamed or never counted"
    for name, expected in METRICS.items():
        assert labels[name] == {tuple(sorted(expected))}, name
    got = scrape(registry)
    assert value(got, "power_loop_tokens_total", kind="cache_write", purpose="fold") == 3
    assert value(got, "power_loop_errors_total", stage="fold", code="fold_failed") == 1
    assert value(got, "power_loop_timer_fires_total", outcome="skipped") == 1
    assert value(got, "power_loop_lease_waits_total", reason="holder_gone") == 1


async def test_sends_model_calls_tools_tokens_and_errors_are_counted(store: Store) -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry=registry)
    down = LLMUnavailableError("the model is down", provider="scripted")
    llm = ScriptedLLM([call_tool("add", {"a": 2, "b": 3}), reply("5"),
                       call_tool("add", {"a": "x"}), reply("sorry"), fail(down)])
    loop = loop_with(store, llm, [sink], tools=[add])
    sid = await loop.new_session()
    first = await loop.send("2 + 3?", sid)
    second = await loop.send("x + 1?", sid)
    with pytest.raises(LLMUnavailableError):
        await loop.send("again", sid)
    assert await flush_sinks(sink)
    got = scrape(registry)
    assert value(got, "power_loop_sends_started_total", source="user", resumed="false") == 3
    assert value(got, "power_loop_sends_total", status="done", stop_reason="end_turn") == 2
    assert value(got, "power_loop_send_duration_seconds_count", outcome="done") == 2
    assert value(got, "power_loop_send_duration_seconds_count", outcome="failed") == 1
    assert value(got, "power_loop_send_rounds_count") == 2
    assert value(got, "power_loop_send_rounds_sum") == 4
    calls = {"provider": "ScriptedLLM", "model": "scripted"}
    assert value(got, "power_loop_model_calls_total", stop_reason="tool_use", **calls) == 2
    assert value(got, "power_loop_model_calls_total", stop_reason="end_turn", **calls) == 2
    assert value(got, "power_loop_model_call_duration_seconds_count", **calls) == 4
    assert value(got, "power_loop_tool_calls_total", tool="add", outcome="ok") == 1
    assert value(got, "power_loop_tool_calls_total", tool="add", outcome="error") == 1
    assert value(got, "power_loop_tool_call_duration_seconds_count", tool="add") == 2
    usage = first.usage + second.usage
    assert value(got, "power_loop_tokens_total", kind="input", purpose="send") \
        == usage.input_tokens
    assert value(got, "power_loop_tokens_total", kind="output", purpose="send") \
        == usage.output_tokens
    assert value(got, "power_loop_errors_total", stage="send", code="llm_unavailable") == 1


async def test_timer_fires_lateness_and_worker_claims_are_counted(store: Store) -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry=registry)
    agent = Agent()
    loop = agent.loop(store)
    sid = await loop.new_session()
    await store.schedule_timer(sid, "wake up", at=utcnow())

    async def fired() -> bool:
        await flush_sinks(sink)
        return value(scrape(registry), "power_loop_sends_total", status="done",
                     stop_reason="end_turn") == 1

    async with running(worker(store, loop, sinks=[sink])):
        await eventually(fired, "the timer's send to be counted")
    got = scrape(registry)
    assert value(got, "power_loop_timer_fires_total", outcome="fired") == 1
    assert value(got, "power_loop_timer_lateness_seconds_count") == 1
    assert value(got, "power_loop_timer_lateness_seconds_sum") >= 0
    assert value(got, "power_loop_worker_claims_total", kind="timer") == 1
    assert value(got, "power_loop_sends_started_total", source="timer", resumed="false") == 1
