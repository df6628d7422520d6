"""What a send returns, and what ``history`` lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from power_loop.llm.messages import Message, Usage
from power_loop.store.waits import WaitRecord


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one send.

    Attributes:
        session_id: The session.
        send_index: The send's index in the session (0, 1, 2...).
        final_text: The answer (an answer continued after the output limit is joined).
        usage: Tokens spent by every model call of the send.
        rounds: Model calls made.
        stop_reason: ``end_turn``, ``max_rounds``, ``token_budget``, ``max_tokens``
            (cut and out of continuations), ``refusal``, ``cancelled``, ``aborted``;
            ``awaiting_approval`` or ``awaiting_input`` while it waits on a person.
        status: ``done``, ``cancelled``, ``aborted``, or ``waiting`` (the send is paused
            until the calls in ``waiting`` are decided; see docs/human-in-the-loop.md).
        messages: The send's messages, the user's first.
        output: With an ``output_schema``: the answer parsed from JSON and validated.
        children_usage: The part of ``usage`` spent by sub-agents the send started
            (see docs/agents.md).
        waiting: What a ``waiting`` send waits on: pass each ``wait_id`` (the call's
            id) to ``approve``, ``reject`` or ``answer``.
    """

    session_id: str
    send_index: int
    final_text: str
    usage: Usage
    rounds: int
    stop_reason: str
    status: str = "done"
    messages: tuple[Message, ...] = ()
    output: Any = None
    children_usage: Usage = field(default_factory=Usage)
    waiting: tuple[WaitRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One stored message with its place in the session."""

    seq: int
    send_index: int
    message: Message
    created_at: datetime
