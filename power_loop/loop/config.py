"""``AgentLoopConfig``: every knob of a loop, with defaults a production app can keep."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from power_loop.context.fold import FoldStrategy
from power_loop.context.memory import MemoryProvider
from power_loop.context.notes import NoteLimits
from power_loop.context.representation import Representation, VerbatimRepresentation
from power_loop.context.tokens import EstimatingCounter, TokenCounter
from power_loop.errors import InvalidArgumentError
from power_loop.events._chain import check_hooks
from power_loop.events.hooks import Hook
from power_loop.events.sinks import Sink, check_sinks
from power_loop.events.types import Event
from power_loop.timers.tools import TimerLimits
from power_loop.tools.tool import MIN_OUTPUT_CHARS


@dataclass(frozen=True, kw_only=True)
class AgentLoopConfig:
    """How a :class:`~power_loop.StatefulAgentLoop` behaves.

    Attributes:
        system_prompt: Used by sessions created without a system prompt of their own.
        max_rounds: Model calls that may use tools in one send. When they run out the
            model is called once more without tools, so a send always ends with text.
        max_send_tokens: Hard cap on tokens (input + output, cached included) one send
            may spend; when reached, no further model call is made.
        max_output_tokens: Cap on each model answer's length.
        max_continuations: How many times an answer cut by the output limit is
            continued automatically.
        output_schema: JSON Schema the final answer must match (structured output).
        tool_timeout: Default seconds a tool may run.
        max_tool_output_chars: Default cap on a tool result's length.
        max_parallel_tools: Tool calls run at once when the model asks for several.
        lease_ttl: Seconds a session lease lasts between renewals; a crashed holder's
            session is free again after at most this long.
        lease_wait: Seconds to wait for a session another process holds: ``0`` fails
            at once with SessionBusyError, ``None`` waits as long as it takes.
        on_pending: What ``send`` does when the session's previous send never
            finished (its process died): ``raise`` SendPendingError, ``resume`` it
            first, or ``abort`` it first. A retry with that send's own ``request_key``
            waits out the dead process's lease, then raises, finishes the send and
            returns its result, or aborts it and returns it (status ``aborted``).
        cache_sessions: ``0`` keeps this loop from using the store's window cache
            (any other value uses it). The cache belongs to the store, shared by its
            loops and bounded by ``open_store(cache_bytes=...)``; it only saves reads:
            it is checked against the store on every send.
        representation: How finished sends appear in later requests
            (``VerbatimRepresentation()`` by default, or ``ProjectedRepresentation()``).
        fold_strategy: How older history is compacted once over budget
            (``None``: never; ``LLMSummaryFold()`` or ``AgenticFold()``).
        context_budget_tokens: The request size (input tokens) above which older sends
            are folded; needs a ``fold_strategy``.
        token_counter: Estimates tokens before a request is made (calibrated by the
            provider's own counts).
        notes: Bounds of the agent's notes; ``None`` offers no note tools.
        memory: Cross-session recall, injected at the request's tail.
        memory_budget_tokens: Tokens reserved for memory when deciding to fold.
        recall_max_chars: The longest answer of the recall tools.
        timers: Bounds on the wake-ups the agent may schedule for itself; ``None``
            offers no timer tools.
        on_event: Receives every event the loop emits (sends, folds, timers), streamed
            or not: a place for logs and metrics.
        max_agent_depth: With ``agents=``: how deep a tree of sub-agents may grow (a
            session's children are at depth 1, theirs at 2...).
        max_agents_per_send: With ``agents=``: sub-agents one send may start.
        max_parallel_agents: With ``agents=``: sub-agents of one send running at once
            when the model starts several together.
        hooks: Code of yours run at each send, model call, tool call and fold, in this
            order; each may observe, change, veto or answer in place of what it wraps
            (see :class:`~power_loop.Hooks` and docs/hooks.md).
            or not: a place for logs and metrics. It runs inline: what it raises
            fails the send.
        sinks: Also receive every event, each from a bounded queue and a thread of its
            own, so a slow or failing sink never slows or fails a send
            (:class:`~power_loop.JsonlSink`, :class:`~power_loop.OtelSink`,
            :class:`~power_loop.PrometheusSink`; see docs/observability.md).
    """

    system_prompt: str | None = None
    max_rounds: int = 20
    max_send_tokens: int | None = None
    max_output_tokens: int | None = None
    max_continuations: int = 2
    output_schema: Mapping[str, Any] | None = None
    tool_timeout: float | None = 120.0
    max_tool_output_chars: int = 50_000
    max_parallel_tools: int = 8
    lease_ttl: float = 30.0
    lease_wait: float | None = 300.0
    on_pending: Literal["raise", "resume", "abort"] = "raise"
    cache_sessions: int = 256
    representation: Representation = field(default_factory=VerbatimRepresentation)
    fold_strategy: FoldStrategy | None = None
    context_budget_tokens: int | None = None
    token_counter: TokenCounter = field(default_factory=EstimatingCounter)
    notes: NoteLimits | None = None
    memory: MemoryProvider | None = None
    memory_budget_tokens: int = 500
    recall_max_chars: int = 8_000
    timers: TimerLimits | None = None
    on_event: Callable[[Event], None] | None = None
    max_agent_depth: int = 3
    max_agents_per_send: int = 8
    max_parallel_agents: int = 4
    hooks: Sequence[Hook] = ()
    sinks: Sequence[Sink] = ()

    def __post_init__(self) -> None:
        def positive(name: str, value: float | None, *, allow_none: bool = False,
                     allow_zero: bool = False) -> None:
            if value is None and allow_none:
                return
            if value is None or value < 0 or (value == 0 and not allow_zero):
                raise InvalidArgumentError(f"AgentLoopConfig.{name} must be "
                                           f"{'>= 0' if allow_zero else '> 0'}, not {value!r}")

        object.__setattr__(self, "sinks", check_sinks(self.sinks, "AgentLoopConfig.sinks"))
        positive("max_rounds", self.max_rounds)
        positive("max_send_tokens", self.max_send_tokens, allow_none=True)
        positive("max_output_tokens", self.max_output_tokens, allow_none=True)
        positive("max_continuations", self.max_continuations, allow_zero=True)
        positive("tool_timeout", self.tool_timeout, allow_none=True)
        if self.max_tool_output_chars < MIN_OUTPUT_CHARS:
            raise InvalidArgumentError(f"AgentLoopConfig.max_tool_output_chars must be at "
                                       f"least {MIN_OUTPUT_CHARS}")
        positive("max_parallel_tools", self.max_parallel_tools)
        positive("lease_ttl", self.lease_ttl)
        positive("lease_wait", self.lease_wait, allow_none=True, allow_zero=True)
        positive("cache_sessions", self.cache_sessions, allow_zero=True)
        positive("context_budget_tokens", self.context_budget_tokens, allow_none=True)
        positive("memory_budget_tokens", self.memory_budget_tokens, allow_zero=True)
        positive("recall_max_chars", self.recall_max_chars)
        positive("max_agent_depth", self.max_agent_depth)
        positive("max_agents_per_send", self.max_agents_per_send)
        positive("max_parallel_agents", self.max_parallel_agents)
        if (self.fold_strategy is None) != (self.context_budget_tokens is None):
            raise InvalidArgumentError(
                "AgentLoopConfig: a fold_strategy needs context_budget_tokens, and "
                "context_budget_tokens needs a fold_strategy")
        if self.output_schema is not None:
            from power_loop.loop.structured import validator_for

            validator_for(self.output_schema)
        check_hooks(self.hooks)
        if self.on_pending not in ("raise", "resume", "abort"):
            raise InvalidArgumentError(
                f"AgentLoopConfig.on_pending must be 'raise', 'resume' or 'abort', "
                f"not {self.on_pending!r}")
