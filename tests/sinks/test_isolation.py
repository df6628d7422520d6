"""Sinks never slow a send or break it: a sink that raises or blocks is isolated,
reported once and counted; a loop's and a worker's events reach every sink."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from conformance.waiting import eventually
from power_loop import (
    AgentLoopConfig,
    InvalidArgumentError,
    JsonlSink,
    LLMUnavailableError,
    MemorySink,
    ScriptedLLM,
    SendFailed,
    SendFinished,
    Store,
    call_tool,
    close_sinks,
    fail,
    flush_sinks,
    replay,
    reply,
    sink_stats,
    tool,
)
from power_loop.events import TimerFired, WorkerClaimed
from power_loop.worker import Worker
from tests.sinks.support import BlockingSink, RaisingSink, loop_with, plain
from tests.workers.inproc import Agent, running, utcnow, worker


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: One.
        b: The other.
    """
    return a + b


def adding() -> ScriptedLLM:
    return ScriptedLLM([call_tool("add", {"a": 2, "b": 3}), reply("5")])


def sink_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "power_loop.sinks" and r.levelno == logging.WARNING]


async def test_every_event_reaches_the_sinks_and_replays_from_jsonl(store: Store,
                                                                     tmp_path: Path) -> None:
    memory, jsonl = MemorySink(), JsonlSink(tmp_path / "events.jsonl")
    streamed = []
    loop = loop_with(store, adding(), [memory, jsonl], tools=[add])
    sid = await loop.new_session()
    async for event in loop.stream("2 + 3?", sid):
        streamed.append(event)
    assert await flush_sinks(memory, jsonl)
    assert memory.events == streamed
    assert [e.type for e in streamed] == [
        "SendStarted", "RoundStarted", "UsageUpdated", "RoundFinished", "ToolCallStarted",
        "ToolCallFinished", "RoundStarted", "TextChunk", "UsageUpdated", "RoundFinished",
        "SendFinished"]
    replayed = list(replay(jsonl.path))
    assert [plain(e) for e in replayed] == [plain(e) for e in streamed]
    assert replayed == streamed
    assert sink_stats(jsonl).delivered == len(streamed)


async def test_a_raising_sink_is_isolated_reported_once_and_counted(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    broken, control = RaisingSink(), MemorySink()
    loop = loop_with(store, ScriptedLLM([reply("one"), reply("two")]), [broken, control])
    sid = await loop.new_session()
    with caplog.at_level(logging.WARNING, logger="power_loop.sinks"):
        first = await loop.send("a", sid)
        second = await loop.send("b", sid)
        assert await flush_sinks(broken, control)
    assert (first.final_text, second.final_text) == ("one", "two")
    stats = sink_stats(broken)
    assert stats.failed == broken.calls == len(control.events) > 0
    assert stats.delivered == 0 and stats.pending == 0
    warnings = sink_warnings(caplog)
    assert len(warnings) == 1 and "RaisingSink" in warnings[0]


async def test_a_blocked_sink_never_holds_a_send_back(store: Store) -> None:
    blocked, control = BlockingSink(), MemorySink()
    loop = loop_with(store, adding(), [blocked, control], tools=[add])
    sid = await loop.new_session()
    # The sink blocks until released, and it is released only after the send returned:
    # had the send waited for it, it would never have returned.
    result = await loop.send("2 + 3?", sid)
    assert result.final_text == "5"
    assert await flush_sinks(control)
    total = len(control.events)
    await asyncio.to_thread(blocked.entered.wait)
    stats = sink_stats(blocked)
    assert stats.accepted == total and stats.delivered == 0 and stats.pending == total
    assert not await flush_sinks(blocked, within=0.05)  # reported, not waited for
    blocked.release.set()
    assert await flush_sinks(blocked)
    assert blocked.seen == control.events


async def test_a_full_queue_drops_new_events_counts_them_and_warns_once(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    blocked, control = BlockingSink(queue_size=3), MemorySink()
    loop = loop_with(store, ScriptedLLM([reply("one"), reply("two")]), [blocked, control])
    sid = await loop.new_session()
    with caplog.at_level(logging.WARNING, logger="power_loop.sinks"):
        assert (await loop.send("a", sid)).final_text == "one"
        assert (await loop.send("b", sid)).final_text == "two"
    assert await flush_sinks(control)
    stats = sink_stats(blocked)
    assert stats.accepted <= 4  # three queued, and perhaps one taken before it blocked
    assert stats.dropped > 0
    assert stats.accepted + stats.dropped == len(control.events)
    assert len(sink_warnings(caplog)) == 1
    blocked.release.set()
    assert await flush_sinks(blocked)
    # What was accepted arrives, in order; what was dropped never does.
    assert len(blocked.seen) == stats.accepted
    assert blocked.seen == [e for e in control.events if e in blocked.seen]


async def test_a_failed_send_ends_with_send_failed(store: Store) -> None:
    memory = MemorySink()
    down = LLMUnavailableError("the model is down", provider="scripted")
    loop = loop_with(store, ScriptedLLM([fail(down)]), [memory])
    sid = await loop.new_session()
    with pytest.raises(LLMUnavailableError):
        await loop.send("a", sid)
    assert await flush_sinks(memory)
    last = memory.events[-1]
    assert isinstance(last, SendFailed)
    assert (last.code, last.error_type, last.send_index) == (
        "llm_unavailable", "power_loop.errors.LLMUnavailableError", 0)
    assert "the model is down" in last.message
    assert not any(isinstance(e, SendFinished) for e in memory.events)


async def test_a_worker_feeds_its_sinks_and_the_loops(store: Store) -> None:
    agent = Agent()
    mine, loops = MemorySink(), MemorySink()
    loop = agent.loop(store, sinks=[loops])
    sid = await loop.new_session()
    await store.schedule_timer(sid, "wake up", at=utcnow())

    async def fired() -> bool:
        return any(isinstance(e, SendFinished) for e in mine.events)

    async with running(worker(store, loop, sinks=[mine])):
        await eventually(fired, "the timer's send to reach the worker's sink")
    assert await flush_sinks(mine, loops)
    for seen in (mine, loops):
        kinds = [type(e) for e in seen.events]
        assert WorkerClaimed in kinds and TimerFired in kinds and SendFinished in kinds
    assert [e.seq for e in mine.events] == [e.seq for e in loops.events]


async def test_closing_a_sink_flushes_it_and_later_events_are_dropped(
        store: Store, tmp_path: Path) -> None:
    jsonl = JsonlSink(tmp_path / "e.jsonl")
    loop = loop_with(store, ScriptedLLM([reply("one"), reply("two")]), [jsonl])
    sid = await loop.new_session()
    await loop.send("a", sid)
    assert await close_sinks(jsonl)
    written = len(list(replay(jsonl.path)))
    assert written == sink_stats(jsonl).delivered > 0
    assert (await loop.send("b", sid)).final_text == "two"
    assert len(list(replay(jsonl.path))) == written
    assert sink_stats(jsonl).dropped > 0


@pytest.mark.parametrize("sinks", [[object()], "events.jsonl", [MemorySink(), 3]])
def test_what_is_not_a_sink_is_refused(sinks: object) -> None:
    with pytest.raises(InvalidArgumentError, match="sink"):
        AgentLoopConfig(sinks=sinks)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sink"):
        Worker(dsn="x.db", loop_factory=lambda s: None, sinks=sinks)  # type: ignore[arg-type,return-value]
