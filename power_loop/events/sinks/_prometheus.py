"""``PrometheusSink``: counters and histograms of what loops and workers did.

Needs the ``prometheus`` extra (``prometheus-client``). Metric names and label sets are
stable (a rename is a breaking change); docs/observability.md lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from power_loop.errors import MissingDriverError
from power_loop.events.sinks._sink import DEFAULT_QUEUE_SIZE
from power_loop.events.types import (
    Event,
    FoldFailed,
    FoldFinished,
    FoldStarted,
    LeaseWait,
    RoundFinished,
    RoundStarted,
    SendFailed,
    SendFinished,
    SendStarted,
    SessionParked,
    TimerFired,
    TimerParked,
    TimerSkipped,
    ToolCallFinished,
    UsageUpdated,
    WorkerClaimed,
    WorkerLostLease,
    WorkerReleased,
)
from power_loop.llm.messages import Usage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
"""Seconds: sends, model calls, tool calls, folds (LLM work runs long)."""
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 300.0, 3600.0)
"""Seconds a timer fired after it was due."""
ROUND_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
"""Model calls per send."""
_KINDS = ("input", "output", "cache_read", "cache_write")
_MAX_OPEN = 10_000  # starts remembered (for durations); the oldest are forgotten past it


class PrometheusSink:
    """Counts what loops and workers do, as Prometheus metrics (the ``prometheus`` extra).

    Metrics are registered on ``registry`` when the sink is made; serve them with
    ``prometheus_client.start_http_server`` or ``generate_latest(registry)``.

    Args:
        registry: Where the metrics are registered (default: prometheus_client's global
            ``REGISTRY``). Two sinks on one registry would register the same names:
            give each its own registry, or share one sink.
        queue_size: Events held for the sink before new ones are dropped.

    Raises:
        MissingDriverError: ``prometheus-client`` is not installed (extra ``prometheus``).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None,
                 queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MissingDriverError("prometheus-client", "prometheus") from exc
        reg = prom.REGISTRY if registry is None else registry
        self.queue_size = queue_size

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return prom.Counter(f"power_loop_{name}", doc, labels, registry=reg)

        def histogram(name: str, doc: str, labels: tuple[str, ...],
                      buckets: tuple[float, ...]) -> Any:
            return prom.Histogram(f"power_loop_{name}", doc, labels, registry=reg,
                                  buckets=buckets)

        self.sends_started = counter("sends_started", "Sends begun (resumed ones too).",
                                     ("source", "resumed"))
        self.sends = counter("sends", "Sends ended with an answer, by outcome.",
                             ("status", "stop_reason"))
        self.send_seconds = histogram("send_duration_seconds",
                                      "Send duration, start to end.", ("outcome",),
                                      LATENCY_BUCKETS)
        self.rounds = histogram("send_rounds", "Model calls (rounds) per ended send.", (),
                                ROUND_BUCKETS)
        self.model_calls = counter("model_calls", "Model calls answered.",
                                   ("provider", "model", "stop_reason"))
        self.model_seconds = histogram("model_call_duration_seconds",
                                       "Model call duration, request to stored answer.",
                                       ("provider", "model"), LATENCY_BUCKETS)
        self.tokens = counter("tokens", "Tokens spent, by kind and purpose.",
                              ("kind", "purpose"))
        self.tool_calls = counter("tool_calls", "Tool calls ended, by outcome.",
                                  ("tool", "outcome"))
        self.tool_seconds = histogram("tool_call_duration_seconds", "Tool call duration.",
                                      ("tool",), LATENCY_BUCKETS)
        self.errors = counter("errors", "Failures by stable error code and stage.",
                              ("stage", "code"))
        self.folds = counter("folds", "Folds ended, by outcome.", ("outcome",))
        self.fold_seconds = histogram("fold_duration_seconds", "Fold duration.", (),
                                      LATENCY_BUCKETS)
        self.timer_fires = counter("timer_fires", "Timer slots, by outcome.", ("outcome",))
        self.timer_lateness = histogram("timer_lateness_seconds",
                                        "Seconds a timer fired (or was skipped) past due.",
                                        (), LATENESS_BUCKETS)
        self.worker_claims = counter("worker_claims", "Work a worker took up.", ("kind",))
        self.worker_releases = counter("worker_releases",
                                       "Work a worker gave back unfinished.", ("kind",))
        self.worker_lost_leases = counter("worker_lost_leases",
                                          "Leases a worker lost while working.", ("kind",))
        self.sessions_parked = counter("sessions_parked",
                                       "Sessions parked after too many resume attempts.")
        self.lease_waits = counter("lease_waits", "Waits for a session another holder has.",
                                   ("reason",))
        self._sends_open: dict[tuple[str, int | None], float] = {}
        self._rounds_open: dict[tuple[str, int | None], tuple[float, str, str]] = {}
        self._folds_open: dict[tuple[str, int], float] = {}

    def __repr__(self) -> str:
        return "PrometheusSink()"

    def handle(self, event: Event) -> None:
        inner = getattr(event, "event", None)
        if isinstance(inner, Event):  # a sub-agent's event: counted like any other
            event = inner
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    # -- sends and model calls -----------------------------------------------------------

    @staticmethod
    def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= _MAX_OPEN:
            del table[next(iter(table))]
        table[key] = value

    def _send_started(self, event: SendStarted) -> None:
        self.sends_started.labels(event.source, str(event.resumed).lower()).inc()
        self._remember(self._sends_open, (event.session_id, event.send_index), event.at)

    def _send_finished(self, event: SendFinished) -> None:
        started = self._sends_open.pop((event.session_id, event.send_index), None)
        if started is None:
            return  # an idempotent retry answered from the store: not a send of its own
        result = event.result
        self.sends.labels(result.status, result.stop_reason).inc()
        self.send_seconds.labels(result.status).observe(max(0.0, event.at - started))
        self.rounds.observe(result.rounds)

    def _send_failed(self, event: SendFailed) -> None:
        self._rounds_open.pop((event.session_id, event.send_index), None)
        started = self._sends_open.pop((event.session_id, event.send_index), None)
        self.errors.labels("send", event.code).inc()
        if started is not None:
            self.send_seconds.labels("failed").observe(max(0.0, event.at - started))

    def _round_started(self, event: RoundStarted) -> None:
        self._remember(self._rounds_open, (event.session_id, event.send_index),
                       (event.at, event.provider, event.model))

    def _round_finished(self, event: RoundFinished) -> None:
        opened = self._rounds_open.pop((event.session_id, event.send_index), None)
        started, provider, model = opened if opened is not None else (event.at, "", "")
        self.model_calls.labels(provider, model, event.stop_reason).inc()
        if opened is not None:
            self.model_seconds.labels(provider, model).observe(max(0.0, event.at - started))

    def _count_tokens(self, usage: Usage, purpose: str) -> None:
        for kind, count in zip(_KINDS, (usage.input_tokens, usage.output_tokens,
                                        usage.cache_read_tokens, usage.cache_write_tokens),
                               strict=True):
            if count:
                self.tokens.labels(kind, purpose).inc(count)

    def _usage(self, event: UsageUpdated) -> None:
        self._count_tokens(event.usage, "send")

    # -- tools, folds, timers, workers ---------------------------------------------------

    def _tool_finished(self, event: ToolCallFinished) -> None:
        outcome = ("synthetic" if event.synthetic is not None
                   else "error" if event.is_error else "ok")
        self.tool_calls.labels(event.name, outcome).inc()
        if event.synthetic is None:
            self.tool_seconds.labels(event.name).observe(max(0.0, event.duration))

    def _fold_started(self, event: FoldStarted) -> None:
        self._remember(self._folds_open, (event.session_id, event.fold_index), event.at)

    def _fold_ended(self, event: FoldFinished | FoldFailed, outcome: str) -> None:
        self.folds.labels(outcome).inc()
        started = self._folds_open.pop((event.session_id, event.fold_index), None)
        if started is not None:
            self.fold_seconds.observe(max(0.0, event.at - started))

    def _fold_finished(self, event: FoldFinished) -> None:
        self._fold_ended(event, "finished")
        self._count_tokens(event.usage, "fold")

    def _fold_failed(self, event: FoldFailed) -> None:
        self._fold_ended(event, "failed")
        self.errors.labels("fold", event.error.code).inc()

    def _timer_fired(self, event: TimerFired) -> None:
        self.timer_fires.labels("fired").inc()
        self.timer_lateness.observe(max(0.0, event.lateness))

    def _timer_skipped(self, event: TimerSkipped) -> None:
        self.timer_fires.labels("skipped").inc()
        self.timer_lateness.observe(max(0.0, event.lateness))

    def _timer_parked(self, event: TimerParked) -> None:
        self.timer_fires.labels("parked").inc()


_HANDLERS: dict[type[Event], Any] = {
    SendStarted: PrometheusSink._send_started,
    SendFinished: PrometheusSink._send_finished,
    SendFailed: PrometheusSink._send_failed,
    RoundStarted: PrometheusSink._round_started,
    RoundFinished: PrometheusSink._round_finished,
    UsageUpdated: PrometheusSink._usage,
    ToolCallFinished: PrometheusSink._tool_finished,
    FoldStarted: PrometheusSink._fold_started,
    FoldFinished: PrometheusSink._fold_finished,
    FoldFailed: PrometheusSink._fold_failed,
    TimerFired: PrometheusSink._timer_fired,
    TimerSkipped: PrometheusSink._timer_skipped,
    TimerParked: PrometheusSink._timer_parked,
    WorkerClaimed: lambda self, e: self.worker_claims.labels(e.kind).inc(),
    WorkerReleased: lambda self, e: self.worker_releases.labels(e.kind).inc(),
    WorkerLostLease: lambda self, e: self.worker_lost_leases.labels(e.kind).inc(),
    SessionParked: lambda self, e: self.sessions_parked.inc(),
    LeaseWait: lambda self, e: self.lease_waits.labels(e.reason).inc(),
}
