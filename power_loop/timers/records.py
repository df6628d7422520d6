"""What a timer is: its record, a worker's claim on one fire, and the policies.

The store keeps timers (:mod:`power_loop.store.timer_ops`), workers fire them
(:mod:`power_loop.worker`), and the agent schedules its own through
:mod:`power_loop.timers.tools`; these are the types all of them share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MISSED_POLICIES = frozenset({"fire_once", "skip"})
TIMER_STATUSES = ("scheduled", "done", "cancelled", "parked")
TIMER_KINDS = frozenset({"deliver", "expiry"})


@dataclass(frozen=True, slots=True)
class TimerRecord:
    """A timer's row.

    Attributes:
        status: ``scheduled``, ``done`` (a one-shot timer that fired), ``cancelled`` or
            ``parked`` (its firing kept failing).
        due_at: When it fires next (database clock).
        every: Its period in seconds (``None``: one-shot).
        missed: ``fire_once`` (a late slot fires once, the later missed ones are dropped)
            or ``skip`` (a slot more than one period late does not fire).
        fire_count: Fires delivered so far (the next fire's number).
        attempts: Claims of the current fire that did not deliver it.
        kind: ``deliver`` (a fire sends ``message`` to the session) or ``expiry`` (a
            fire rejects the unanswered wait whose id is ``message``).
    """

    timer_id: str
    session_id: str
    message: str
    status: str
    due_at: datetime
    every: float | None
    missed: str
    fire_count: int
    attempts: int
    claim_owner: str | None
    claim_epoch: int
    last_error: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime
    kind: str = "deliver"


@dataclass(frozen=True, slots=True)
class TimerClaim:
    """A due timer a worker has claimed.

    Attributes:
        lateness: Seconds between ``due_at`` and the claim (database clock).
    """

    timer: TimerRecord
    owner: str
    epoch: int
    lateness: float

    @property
    def request_key(self) -> str:
        """The idempotency key of this fire: one send per timer and fire number."""
        return f"timer:{self.timer.timer_id}:{self.timer.fire_count}"
