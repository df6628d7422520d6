"""``OtelSink``: spans for sends, model calls, tool calls, folds and timer fires, checked
against the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conformance.waiting import eventually
from power_loop import (
    Event,
    LLMRequest,
    LLMSummaryFold,
    LLMUnavailableError,
    OtelSink,
    ScriptedLLM,
    SendFinished,
    SendStarted,
    Store,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
    Turn,
    Usage,
    call_tool,
    fail,
    flush_sinks,
    reply,
)
from power_loop.events import RoundFinished, RoundStarted, UsageUpdated
from power_loop.loop.results import SendResult
from tests.sinks.support import loop_with
from tests.sinks.test_isolation import add, adding
from tests.workers.inproc import Agent, running, utcnow, worker


@dataclasses.dataclass
class Traced:
    sink: OtelSink
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(OtelSink(tracer_provider=provider), exporter)
    provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {})[key]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_a_send_with_a_tool_call(store: Store, traced: Traced) -> None:
    loop = loop_with(store, adding(), [traced.sink], tools=[add])
    sid = await loop.new_session()
    result = await loop.send("2 + 3?", sid)
    assert await flush_sinks(traced.sink)
    (send,) = traced.named("send")
    chats = sorted(traced.named("chat"), key=lambda s: s.start_time or 0)
    (tool_span,) = traced.named("execute_tool")
    assert len(chats) == 2 and parent_of(send) is None
    assert all(parent_of(s) == span_id(send) for s in (*chats, tool_span))
    assert dict(send.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": sid,
        "power_loop.session_id": sid, "power_loop.send_index": 0,
        "power_loop.source": "user", "power_loop.resumed": False,
        "power_loop.status": "done", "power_loop.stop_reason": "end_turn",
        "power_loop.rounds": 2, "power_loop.input_tokens": result.usage.input_tokens,
        "power_loop.output_tokens": result.usage.output_tokens,
        "power_loop.cache_read_tokens": 0, "power_loop.cache_write_tokens": 0}
    first, second = chats
    assert first.name == "chat scripted" and first.kind is SpanKind.CLIENT
    assert dict(first.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "ScriptedLLM",
        "gen_ai.system": "ScriptedLLM", "gen_ai.request.model": "scripted",
        "gen_ai.conversation.id": sid, "power_loop.round": 1,
        "gen_ai.usage.input_tokens": result.messages[1].meta["usage"]["input_tokens"],
        "gen_ai.usage.output_tokens": result.messages[1].meta["usage"]["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "gen_ai.response.finish_reasons": ("tool_use",), "power_loop.tool_calls": 1}
    assert (second.attributes or {})["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert tool_span.name == "execute_tool add"
    assert dict(tool_span.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add",
        "gen_ai.tool.call.id": result.messages[1].tool_calls[0].id,
        "power_loop.tool.attempt": 1, "power_loop.tool.is_error": False}
    # Spans sit in time as the events did: within the send, model, tool, model.
    assert send.start_time is not None and send.end_time is not None
    times = [(s.start_time or 0, s.end_time or 0) for s in (first, tool_span, second)]
    assert send.start_time <= times[0][0] <= times[0][1] <= times[1][0] <= times[1][1] \
        <= times[2][0] <= times[2][1] <= send.end_time
    assert all(s.status.status_code is StatusCode.UNSET for s in traced.spans())


async def test_a_failed_model_call_marks_its_span_and_the_send(store: Store,
                                                               traced: Traced) -> None:
    down = LLMUnavailableError("the model is down", provider="scripted")
    loop = loop_with(store, ScriptedLLM([fail(down)]), [traced.sink])
    sid = await loop.new_session()
    with pytest.raises(LLMUnavailableError):
        await loop.send("a", sid)
    assert await flush_sinks(traced.sink)
    (send,) = traced.named("send")
    (chat,) = traced.named("chat")
    for span in (send, chat):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "llm_unavailable"
        assert "the model is down" in (span.status.description or "")


async def test_a_failing_tool_marks_its_span(store: Store, traced: Traced) -> None:
    llm = ScriptedLLM([call_tool("add", {"a": "not a number"}), reply("sorry")])
    loop = loop_with(store, llm, [traced.sink], tools=[add])
    await loop.send("add", await loop.new_session())
    assert await flush_sinks(traced.sink)
    (tool_span,) = traced.named("execute_tool")
    assert tool_span.status.status_code is StatusCode.ERROR
    assert (tool_span.attributes or {})["power_loop.tool.is_error"] is True
    (send,) = traced.named("send")
    assert send.status.status_code is StatusCode.UNSET  # the model read the error


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tagged(Event):
    """A sub-agent's event carried on its parent's stream, as sub-agents tag them."""

    depth: int
    parent_session_id: str
    call_id: str
    agent: str
    event: Event


def one_send(sid: str, *, call: str | None = None, tagged: tuple[str, str, int] | None = None,
             inner: Sequence[Event] = ()) -> list[Event]:
    """The events of a send of ``sid`` (a model call, and a tool call ``call`` that
    carries ``inner``), each tagged as a child of ``tagged`` (parent, call, depth)."""
    usage = Usage(input_tokens=10, output_tokens=2)
    events: list[Event] = [
        SendStarted(session_id=sid, send_index=0, source="user"),
        RoundStarted(session_id=sid, send_index=0, round=1, model="m", provider="p"),
        UsageUpdated(session_id=sid, send_index=0, usage=usage, total=usage),
        RoundFinished(session_id=sid, send_index=0, round=1, stop_reason="end_turn",
                      tool_calls=1 if call else 0)]
    if call is not None:
        events.append(ToolCallStarted(session_id=sid, send_index=0, call_id=call,
                                      name="spawn_agent", arguments="{}"))
        events.extend(inner)
        events.append(ToolCallFinished(session_id=sid, send_index=0, call_id=call,
                                       name="spawn_agent", output="ok", is_error=False,
                                       duration=0.1))
    events.append(SendFinished(session_id=sid, send_index=0, result=SendResult(
        sid, 0, "ok", usage, 1, "end_turn")))
    if tagged is None:
        return events
    parent, call_id, depth = tagged
    return [Tagged(session_id=e.session_id, send_index=e.send_index, depth=depth,
                   parent_session_id=parent, call_id=call_id, agent="helper", event=e)
            if not isinstance(e, Tagged) else e for e in events]


def test_a_sub_agents_spans_nest_under_the_tool_call_that_started_it(traced: Traced) -> None:
    grandchild = one_send("grandchild", tagged=("child", "c2", 2))
    child = one_send("child", call="c2", tagged=("parent", "c1", 1), inner=grandchild)
    for event in one_send("parent", call="c1", inner=child):
        traced.sink.handle(event)
    sends = {(s.attributes or {})["power_loop.session_id"]: s for s in traced.named("send")}
    tools = {(s.attributes or {})["gen_ai.tool.call.id"]: s for s in traced.named("execute_tool")}
    assert parent_of(sends["parent"]) is None
    assert parent_of(tools["c1"]) == span_id(sends["parent"])
    assert parent_of(sends["child"]) == span_id(tools["c1"])
    assert parent_of(tools["c2"]) == span_id(sends["child"])
    assert parent_of(sends["grandchild"]) == span_id(tools["c2"])
    assert (sends["grandchild"].attributes or {})["power_loop.depth"] == 2
    assert (sends["child"].attributes or {})["power_loop.parent_call_id"] == "c1"
    assert {s.context.trace_id for s in traced.spans() if s.context} == {
        sends["parent"].context.trace_id if sends["parent"].context else 0}
    chats = [s for s in traced.named("chat")
             if (s.attributes or {})["gen_ai.conversation.id"] == "grandchild"]
    assert [parent_of(s) for s in chats] == [span_id(sends["grandchild"])]


def folding(request: LLMRequest) -> Turn:
    if request.metadata.get("purpose") == "fold":
        return reply("the summary")
    return reply("word " * 60)


async def test_a_fold_is_a_span_of_its_send(store: Store, traced: Traced) -> None:
    loop = loop_with(store, ScriptedLLM(folding), [traced.sink],
                     fold_strategy=LLMSummaryFold(), context_budget_tokens=400)
    sid = await loop.new_session()
    seen: list[Any] = []
    for i in range(12):
        await loop.send(f"question {i}", sid)
        if await store.list_folds(sid):
            break
    seen = await store.list_folds(sid)
    assert seen, "the session should have needed a fold"
    assert await flush_sinks(traced.sink)
    (fold,) = traced.named("fold")
    sends = {attr(s, "power_loop.send_index"): s for s in traced.named("send")}
    folded_in = sends[max(sends)]
    assert parent_of(fold) == span_id(folded_in)
    assert attr(fold, "power_loop.fold.index") == 0
    assert attr(fold, "power_loop.fold.strategy") == seen[0].strategy
    assert attr(fold, "gen_ai.usage.output_tokens") > 0


async def test_a_timer_fire_is_the_parent_of_the_send_it_delivers(store: Store,
                                                                  traced: Traced) -> None:
    agent = Agent()
    loop = agent.loop(store, sinks=[traced.sink])
    sid = await loop.new_session()
    await store.schedule_timer(sid, "wake up", at=utcnow())

    async def sent() -> bool:
        await flush_sinks(traced.sink)
        return bool(traced.named("send"))

    async with running(worker(store, loop)):
        await eventually(sent, "the timer's send to be traced")
    (fire,) = traced.named("timer fire")
    (send,) = traced.named("send")
    assert parent_of(send) == span_id(fire) and parent_of(fire) is None
    assert (send.attributes or {})["power_loop.source"] == "timer"
    assert attr(fire, "power_loop.timer.fire") == 0
    assert attr(fire, "power_loop.timer.lateness_seconds") >= 0
    assert (fire.end_time or 0) >= (send.end_time or 0)


def test_text_chunks_and_unknown_events_make_no_spans(traced: Traced) -> None:
    traced.sink.handle(TextChunk(session_id="s", text="hi"))
    traced.sink.handle(SendFinished(session_id="s", send_index=3, result=SendResult(
        "s", 3, "", Usage(), 0, "end_turn")))  # a retry answered from the store
    assert traced.spans() == []
