"""``OtelSink``: OpenTelemetry spans for sends, model calls, tool calls, folds, timer fires.

Needs the ``otel`` extra (``opentelemetry-api``); an SDK and an exporter are the
application's choice. Span times are the events' own (``at``), so the spans are right
however late the sink's thread gets to them. See docs/observability.md for every name
and attribute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from power_loop.errors import MissingDriverError
from power_loop.events.sinks._sink import DEFAULT_QUEUE_SIZE
from power_loop.events.types import (
    Event,
    FoldFailed,
    FoldFinished,
    FoldStarted,
    RoundFinished,
    RoundStarted,
    SendFailed,
    SendFinished,
    SendStarted,
    TimerFired,
    TimerSkipped,
    ToolCallFinished,
    ToolCallStarted,
    UsageUpdated,
)
from power_loop.llm.messages import Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

MAX_OPEN_SPANS = 10_000
"""Spans kept open per kind; past it the oldest is ended (``power_loop.abandoned``)."""
_SendKey = tuple[str, int | None]


class _Round:
    """A model call seen starting: its span is made when it ends, with every attribute
    at once (one attribute check by the SDK instead of one per event), at the start's
    time. A model call has no child spans, so nothing needs it open."""

    __slots__ = ("attributes", "name", "parent", "start")

    def __init__(self, name: str, start: int, parent: Span | None,
                 attributes: dict[str, Any]) -> None:
        self.name, self.start, self.parent, self.attributes = name, start, parent, attributes


def usage_attributes(usage: Usage) -> dict[str, int]:
    """The GenAI token attributes of a usage (input counts cached tokens too)."""
    return {
        "gen_ai.usage.input_tokens": (usage.input_tokens + usage.cache_read_tokens
                                      + usage.cache_write_tokens),
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
    }


class OtelSink:
    """Turns events into OpenTelemetry spans (the ``otel`` extra).

    Spans: ``send`` (a send, from ``SendStarted`` to its end), ``chat {model}`` (a model
    call, kind CLIENT, with the GenAI ``gen_ai.*`` attributes), ``execute_tool {name}``,
    ``fold`` and ``timer fire`` (a timer's delivery and the send it starts). A
    sub-agent's send is a child of the parent's ``execute_tool`` span that started it.

    Args:
        tracer_provider: Where spans go (default: the global one).
        queue_size: Events held for the sink before new ones are dropped.

    Raises:
        MissingDriverError: ``opentelemetry-api`` is not installed (extra ``otel``).
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None,
                 queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDriverError("opentelemetry-api", "otel") from exc
        from power_loop import __version__

        self._trace = trace
        self._tracer = trace.get_tracer("power_loop", __version__,
                                        tracer_provider=tracer_provider)
        self.queue_size = queue_size
        # The API's own no-op tracer records nothing whatever it is given: skip the work.
        self._records = not isinstance(self._tracer, trace.NoOpTracer)
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._sends: dict[_SendKey, Span] = {}
        self._rounds: dict[_SendKey, _Round] = {}
        self._tools: dict[tuple[str, str], tuple[Span, _SendKey]] = {}
        self._folds: dict[tuple[str, int], tuple[Span, _SendKey]] = {}
        self._timers: dict[str, Span] = {}
        self._handlers: dict[type[Event], Callable[[Any, tuple[str, str] | None,
                                                    dict[str, Any]], None]] = {
            SendStarted: self._send_started, SendFinished: self._send_finished,
            SendFailed: self._send_failed, RoundStarted: self._round_started,
            UsageUpdated: self._usage, RoundFinished: self._round_finished,
            ToolCallStarted: self._tool_started, ToolCallFinished: self._tool_finished,
            FoldStarted: self._fold_started, FoldFinished: self._fold_finished,
            FoldFailed: self._fold_failed, TimerFired: self._timer_fired,
            TimerSkipped: self._timer_skipped,
        }

    def __repr__(self) -> str:
        return "OtelSink()"

    # -- the Sink protocol ---------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if not self._records:
            return
        link: tuple[str, str] | None = None
        tags: dict[str, Any] = {}
        inner = getattr(event, "event", None)
        if isinstance(inner, Event):
            # A sub-agent's event, carried on its parent's stream (``ChildEvent``).
            parent, call = getattr(event, "parent_session_id", None), getattr(event, "call_id",
                                                                              None)
            if isinstance(parent, str) and isinstance(call, str):
                link = (parent, call)
            for name in ("depth", "agent"):
                value = getattr(event, name, None)
                if isinstance(value, int | str):
                    tags[f"power_loop.{name}"] = value
            event = inner
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, link, tags)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """End what is still open (marked ``power_loop.abandoned``)."""
        end = time.time_ns()
        spans = [*(self._made(r) for r in self._rounds.values()),
                 *(s for s, _ in self._tools.values()),
                 *(s for s, _ in self._folds.values()), *self._sends.values(),
                 *self._timers.values()]
        for span in spans:
            span.set_attribute("power_loop.abandoned", True)
            span.end(end_time=end)
        for table in (self._sends, self._rounds, self._tools, self._folds, self._timers):
            table.clear()

    # -- helpers -------------------------------------------------------------------------

    def _ns(self, event: Event) -> int:
        return int(event.at * 1e9) + self._offset_ns

    def _start(self, name: str, event: Event, parent: Span | None,
               attributes: dict[str, Any], *, client: bool = False) -> Span:
        trace = self._trace
        context = trace.set_span_in_context(parent) if parent is not None else None
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        return self._tracer.start_span(name, context=context, kind=kind,
                                       attributes=attributes, start_time=self._ns(event))

    def _made(self, round_: _Round) -> Span:
        """The span of a model call, made now (to be ended by the caller)."""
        trace = self._trace
        context = (trace.set_span_in_context(round_.parent) if round_.parent is not None
                   else None)
        return self._tracer.start_span(round_.name, context=context,
                                       kind=trace.SpanKind.CLIENT,
                                       attributes=round_.attributes, start_time=round_.start)

    def _fail(self, span: Span, code: str, message: str | None, end: int) -> None:
        span.set_attribute("error.type", code)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message))
        span.end(end_time=end)

    def _bounded(self, table: dict[Any, Any], end: int) -> None:
        while len(table) >= MAX_OPEN_SPANS:
            oldest = next(iter(table))
            entry = table.pop(oldest)
            span = entry[0] if isinstance(entry, tuple) else entry
            if isinstance(span, _Round):
                span = self._made(span)
            span.set_attribute("power_loop.abandoned", True)
            span.end(end_time=end)

    # -- sends ---------------------------------------------------------------------------

    def _send_started(self, event: SendStarted, link: tuple[str, str] | None,
                      tags: dict[str, Any]) -> None:
        parent: Span | None = None
        if link is not None and link in self._tools:
            parent = self._tools[link][0]
        elif event.source == "timer":
            parent = self._timers.get(event.session_id)
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.conversation.id": event.session_id,
            "power_loop.session_id": event.session_id,
            "power_loop.send_index": -1 if event.send_index is None else event.send_index,
            "power_loop.source": event.source, "power_loop.resumed": event.resumed, **tags}
        if link is not None:
            attributes["power_loop.parent_session_id"] = link[0]
            attributes["power_loop.parent_call_id"] = link[1]
        self._bounded(self._sends, self._ns(event))
        self._sends[(event.session_id, event.send_index)] = self._start(
            "send", event, parent, attributes)

    def _send_finished(self, event: SendFinished, link: object, tags: object) -> None:
        end = self._ns(event)
        span = self._sends.pop((event.session_id, event.send_index), None)
        if span is not None:  # None: an idempotent retry answered from the store
            result = event.result
            span.set_attributes({
                "power_loop.status": result.status, "power_loop.stop_reason": result.stop_reason,
                "power_loop.rounds": result.rounds,
                **{f"power_loop.{k}": v for k, v in result.usage.to_json().items()}})
            span.end(end_time=end)
        timer = self._timers.pop(event.session_id, None)
        if timer is not None:
            timer.end(end_time=end)

    def _send_failed(self, event: SendFailed, link: object, tags: object) -> None:
        key, end = (event.session_id, event.send_index), self._ns(event)
        round_ = self._rounds.pop(key, None)
        if round_ is not None:
            self._fail(self._made(round_), event.code, event.message, end)
        for tool in [k for k, (_, send) in self._tools.items() if send == key]:
            self._fail(self._tools.pop(tool)[0], event.code, None, end)
        for fold in [k for k, (_, send) in self._folds.items() if send == key]:
            self._fail(self._folds.pop(fold)[0], event.code, None, end)
        span = self._sends.pop(key, None)
        if span is not None:
            self._fail(span, event.code, event.message, end)
        timer = self._timers.pop(event.session_id, None)
        if timer is not None:
            self._fail(timer, event.code, None, end)

    # -- model calls ---------------------------------------------------------------------

    def _round_started(self, event: RoundStarted, link: object, tags: object) -> None:
        key = (event.session_id, event.send_index)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.conversation.id": event.session_id,
            "power_loop.round": event.round}
        if event.provider:
            attributes["gen_ai.provider.name"] = event.provider
            attributes["gen_ai.system"] = event.provider
        if event.model:
            attributes["gen_ai.request.model"] = event.model
        name = f"chat {event.model}" if event.model else "chat"
        stale = self._rounds.pop(key, None)
        if stale is not None:  # its end was never seen (a lost event): close it here
            stale.attributes["power_loop.abandoned"] = True
            self._made(stale).end(end_time=self._ns(event))
        self._bounded(self._rounds, self._ns(event))
        self._rounds[key] = _Round(name, self._ns(event), self._sends.get(key), attributes)

    def _usage(self, event: UsageUpdated, link: object, tags: object) -> None:
        round_ = self._rounds.get((event.session_id, event.send_index))
        if round_ is not None:
            round_.attributes.update(usage_attributes(event.usage))

    def _round_finished(self, event: RoundFinished, link: object, tags: object) -> None:
        round_ = self._rounds.pop((event.session_id, event.send_index), None)
        if round_ is not None:
            attributes = round_.attributes
            attributes["gen_ai.response.finish_reasons"] = (event.stop_reason,)
            attributes["power_loop.tool_calls"] = event.tool_calls
            self._made(round_).end(end_time=self._ns(event))

    # -- tool calls ----------------------------------------------------------------------

    def _tool_started(self, event: ToolCallStarted, link: object, tags: object) -> None:
        key = (event.session_id, event.send_index)
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": event.name,
                      "gen_ai.tool.call.id": event.call_id,
                      "power_loop.tool.attempt": event.attempt}
        self._bounded(self._tools, self._ns(event))
        self._tools[(event.session_id, event.call_id)] = (
            self._start(f"execute_tool {event.name}", event, self._sends.get(key),
                        attributes), key)

    def _tool_finished(self, event: ToolCallFinished, link: object, tags: object) -> None:
        entry = self._tools.pop((event.session_id, event.call_id), None)
        if entry is None:  # answered without running (unknown outcome after a crash)
            span = self._start(f"execute_tool {event.name}", event,
                               self._sends.get((event.session_id, event.send_index)),
                               {"gen_ai.operation.name": "execute_tool",
                                "gen_ai.tool.name": event.name,
                                "gen_ai.tool.call.id": event.call_id})
        else:
            span = entry[0]
        span.set_attribute("power_loop.tool.is_error", event.is_error)
        if event.synthetic is not None:
            span.set_attribute("power_loop.tool.synthetic", event.synthetic)
        if event.is_error:
            self._fail(span, event.error_type or event.synthetic or "tool_error", None,
                       self._ns(event))
        else:
            span.end(end_time=self._ns(event))

    # -- folds and timers ----------------------------------------------------------------

    def _fold_started(self, event: FoldStarted, link: object, tags: object) -> None:
        key = (event.session_id, event.send_index)
        attributes = {"power_loop.fold.index": event.fold_index,
                      "power_loop.fold.first_send": event.first_send,
                      "power_loop.fold.end_send": event.end_send,
                      "power_loop.fold.strategy": event.strategy}
        self._bounded(self._folds, self._ns(event))
        self._folds[(event.session_id, event.fold_index)] = (
            self._start("fold", event, self._sends.get(key), attributes), key)

    def _fold_finished(self, event: FoldFinished, link: object, tags: object) -> None:
        entry = self._folds.pop((event.session_id, event.fold_index), None)
        if entry is not None:
            span = entry[0]
            span.set_attributes({**usage_attributes(event.usage),
                                 "power_loop.fold.notes_written": event.notes_written})
            span.end(end_time=self._ns(event))

    def _fold_failed(self, event: FoldFailed, link: object, tags: object) -> None:
        entry = self._folds.pop((event.session_id, event.fold_index), None)
        if entry is not None:
            self._fail(entry[0], event.error.code, event.error.message, self._ns(event))

    def _timer_fired(self, event: TimerFired, link: object, tags: object) -> None:
        stale = self._timers.pop(event.session_id, None)
        if stale is not None:
            stale.end(end_time=self._ns(event))
        self._bounded(self._timers, self._ns(event))
        self._timers[event.session_id] = self._start("timer fire", event, None, {
            "power_loop.session_id": event.session_id, "power_loop.timer.id": event.timer_id,
            "power_loop.timer.fire": event.fire,
            "power_loop.timer.lateness_seconds": event.lateness})

    def _timer_skipped(self, event: TimerSkipped, link: object, tags: object) -> None:
        span = self._start("timer fire", event, None, {
            "power_loop.session_id": event.session_id, "power_loop.timer.id": event.timer_id,
            "power_loop.timer.fire": event.fire, "power_loop.timer.skipped": True,
            "power_loop.timer.lateness_seconds": event.lateness})
        span.end(end_time=self._ns(event))
