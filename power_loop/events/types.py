"""Typed events a loop emits while it works.

Every event carries ``seq`` (a process-wide counter: a total order of everything this
process emitted) and ``at`` (a monotonic timestamp in seconds), plus the session and
send it concerns. ``StatefulAgentLoop.stream`` yields them; sinks (JSONL,
OpenTelemetry, metrics) consume the same objects.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from power_loop.llm.messages import Usage

if TYPE_CHECKING:  # the loop imports this module; a runtime import would be circular
    from power_loop.errors import PowerLoopError
    from power_loop.loop.results import SendResult

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event."""

    session_id: str
    send_index: int | None = None
    seq: int = field(default_factory=lambda: next(_counter))
    at: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str:
        """The event's class name, e.g. ``"TextChunk"``."""
        return type(self).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStarted(Event):
    """A send began (``resumed``: a pending send is being finished)."""

    source: str
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStarted(Event):
    """A model call is about to be made (rounds count from 1 within a send).

    ``model`` is the service's model name and ``provider`` its provider (``openai``,
    ``anthropic``, or the service's class name), for traces and metrics.
    """

    round: int
    model: str = ""
    provider: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TextChunk(Event):
    """A piece of the answer's text as it streams."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted(Event):
    """A tool call begins (``attempt`` > 1: re-run after a crash)."""

    call_id: str
    name: str
    arguments: str
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallFinished(Event):
    """A tool call ended; ``output`` is the result the model will read.

    ``synthetic`` names why power_loop wrote the result itself instead of running the
    tool (``unknown_outcome``: a call cut off by a crash, whose tool is not safe to
    repeat), else it is ``None``.

    When the tool failed, ``error_type`` is the qualified name of what it raised
    (``ValueError``, ``myapp.billing.CardDeclined``; the exception showing its return
    value raised; ``TimeoutError`` when it was abandoned at its deadline) and
    ``traceback`` the formatted traceback (for a timeout: where the tool stood when it
    was abandoned), at most 20,000 characters. Neither is sent to the model. Both are
    ``None`` when the tool returned normally or never ran (the model's own mistake:
    bad arguments, an unknown tool).
    """

    call_id: str
    name: str
    output: str
    is_error: bool
    duration: float
    synthetic: str | None = None
    error_type: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolListChanged(Event):
    """A tool source's tools (an MCP server's) differ from the list seen before: the
    requests of this send carry the new list.

    Attributes:
        source: The source's name (the MCP server's ``name``).
        added: Tools now offered that were not (names as the model sees them).
        removed: Tools no longer offered.
        changed: Tools whose description or schema changed.
    """

    source: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundFinished(Event):
    """A model call answered and its answer is stored."""

    round: int
    stop_reason: str
    tool_calls: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageUpdated(Event):
    """Tokens of the last model call and of the whole send so far."""

    usage: Usage
    total: Usage

    @property
    def cache_hit_ratio(self) -> float:
        """Share of this call's input tokens read from the provider's cache."""
        return self.usage.cache_hit_ratio


@dataclass(frozen=True, slots=True, kw_only=True)
class FoldStarted(Event):
    """Older sends are being folded into a summary (journaled as started)."""

    fold_index: int
    first_send: int
    end_send: int
    strategy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FoldFinished(Event):
    """A fold committed: sends before ``end_send`` now stand as ``summary``."""

    fold_index: int
    end_send: int
    summary: str
    notes_written: int
    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class FoldFailed(Event):
    """A fold failed: it is journaled ``failed`` and the send goes on unfolded.

    ``error`` is an :class:`~power_loop.LLMError` when the fold's model failed (an
    :class:`~power_loop.LLMResponseError` when it broke the service contract), a
    :class:`~power_loop.FoldError` when the strategy itself did.
    """

    fold_index: int
    error: PowerLoopError


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFinished(Event):
    """The send ended; ``result`` is what ``send()`` returns."""

    result: SendResult


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFailed(Event):
    """The send ended by raising instead of answering (no ``SendFinished`` follows).

    The send is left pending (``resume`` finishes it) unless the error says otherwise
    (a ``StructuredOutputError`` comes after the send was stored). A send cancelled by
    its caller ends with ``SendFinished`` (status ``cancelled``) instead; one a stopping
    worker hands back ends with ``SendFailed`` of code ``cancelled``.

    Attributes:
        code: The error's stable ``code`` (``llm_rate_limited``...), ``cancelled``, or
            ``unexpected`` for an exception that is not a ``PowerLoopError``.
        error_type: The qualified name of the exception's class.
        message: What the exception said (at most 2,000 characters).
    """

    code: str
    error_type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseWait(Event):
    """A send or recovery is waiting for the session's lease, which ``holder`` has.

    Reported once per holder waited on. ``reason`` says why the wait lasts:
    ``holder_gone`` (the holder's process, on this host, is dead: the wait lasts until
    its lease expires, ``expires_in`` seconds), ``holder_running`` (the holder is
    running a send or recovery of the session: the wait lasts until it ends), or
    ``holder_unknown`` (a holder on another host: it ends, or its lease expires in
    ``expires_in`` seconds if it stopped renewing it). ``send_index`` is the pending
    send the wait is for, when known (a retry with the send's ``request_key``).

    Attributes:
        holder: The lease owner's id (``host:pid:...`` for loops and workers).
        reason: ``holder_gone``, ``holder_running`` or ``holder_unknown``.
        expires_in: Seconds until the holder's lease expires unless renewed.
        wait_limit: Seconds left of ``lease_wait`` (``None``: no limit).
    """

    holder: str
    reason: str
    expires_in: float
    wait_limit: float | None


# -- timers and workers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerScheduled(Event):
    """A timer was scheduled (by the application or by the agent itself)."""

    timer_id: str
    due_at: datetime
    every: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    """A timer's message was delivered to its session (exactly once per fire)."""

    timer_id: str
    fire: int
    lateness: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerSkipped(Event):
    """A recurring timer's slot was too late to fire (``missed="skip"``)."""

    timer_id: str
    fire: int
    lateness: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerParked(Event):
    """A timer kept failing to fire and is parked (status ``parked``)."""

    timer_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionParked(Event):
    """Workers gave up resuming this session's send after too many attempts."""

    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerClaimed(Event):
    """A worker took up work: ``kind`` is ``timer`` or ``session``."""

    worker: str
    kind: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReleased(Event):
    """A worker gave work back unfinished (shutdown, or a failure to retry later)."""

    worker: str
    kind: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLostLease(Event):
    """A worker lost a lease it held (it was paused or too slow); it stopped that work."""

    worker: str
    kind: str
    key: str


# -- sub-agents --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildEvent(Event):
    """An event of a sub-agent's session, carried on the stream of the send that
    started it (and of that send's own parents).

    ``session_id`` and ``send_index`` are the child's; ``event`` is what the child
    emitted (its ``TextChunk``, ``ToolCallStarted``, ``SendFinished``...). A consumer
    that only shows the parent's answer ignores these; a UI draws the tree from them.

    Attributes:
        depth: How far below the streamed send the child is: 1 for its children, 2 for
            their children...
        parent_session_id: The session whose tool call started the child.
        call_id: That tool call.
        agent: The child's agent name.
        event: The child's own event.
    """

    depth: int
    parent_session_id: str
    call_id: str
    agent: str
    event: Event
