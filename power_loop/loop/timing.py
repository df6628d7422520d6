"""The loop's timer methods: schedule wake-ups, and fire them (for workers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from power_loop.errors import InvalidArgumentError
from power_loop.events.types import Event, TimerFired, TimerScheduled, TimerSkipped
from power_loop.timers.records import MISSED_POLICIES, TimerClaim, TimerRecord

if TYPE_CHECKING:
    from power_loop.loop.results import SendResult
    from power_loop.store.store import Store

Emit = Callable[[Event], None]


class TimerMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`."""

    _get_store: Callable[[], Awaitable[Store]]
    _sink: Callable[[Emit | None], Emit | None]
    _send: Callable[..., Awaitable[SendResult]]
    _expire: Callable[[TimerClaim, Emit | None], Awaitable[SendResult | None]]

    async def schedule(self, session_id: str, message: str, *, at: datetime | None = None,
                       delay: float | None = None, every: float | None = None,
                       missed: str = "fire_once") -> str:
        """Schedule ``message`` to be sent to ``session_id`` later; returns the timer id.

        Args:
            at: When (an aware datetime), or
            delay: seconds from now (the database's clock decides when it is due).
            every: Repeat every this many seconds; slots follow the schedule, not the
                time a worker fires them.
            missed: For recurring timers, a slot found more than one period late either
                fires once (``fire_once``: the missed ones are dropped) or is skipped
                (``skip``).

        Workers (``power-loop worker``) fire due timers; each fire is delivered to the
        session exactly once, marked ``source="timer"``.
        """
        if missed not in MISSED_POLICIES:
            raise InvalidArgumentError(f"missed must be one of {sorted(MISSED_POLICIES)}")
        store = await self._get_store()
        timer = await store.schedule_timer(session_id, message, at=at, delay=delay,
                                           every=every, missed=missed)
        sink = self._sink(None)
        if sink is not None:
            sink(TimerScheduled(session_id=session_id, timer_id=timer.timer_id,
                                due_at=timer.due_at, every=timer.every))
        return timer.timer_id

    async def cancel_timer(self, timer_id: str, *, session_id: str | None = None) -> bool:
        """Cancel a timer; ``False`` when it was not scheduled."""
        store = await self._get_store()
        return await store.cancel_timer(timer_id, session_id=session_id)

    async def list_timers(self, session_id: str | None = None, *, status: str | None = None,
                          limit: int = 1000) -> list[TimerRecord]:
        """The timers of one session, or of every session, soonest first (``status``:
        only ``scheduled``, ``done``, ``cancelled`` or ``parked`` ones)."""
        store = await self._get_store()
        return await store.list_timers(session_id, status=status, limit=limit)

    async def fire_timer(self, claim: TimerClaim, *,
                         on_event: Emit | None = None) -> SendResult | None:
        """Deliver a claimed timer's message and run the send (what workers do).

        The fire is recorded exactly once: the send carries the key
        ``timer:<id>:<fire>``, so a second delivery of the same fire finds the first.
        The timer moves to its next slot as soon as the message is recorded. Returns
        ``None`` when the slot is skipped (``missed="skip"``).
        """
        store = await self._get_store()
        timer, sink = claim.timer, self._sink(on_event)
        if timer.kind == "expiry":  # an unanswered approval becomes a rejection
            return await self._expire(claim, sink)
        if timer.every is not None and timer.missed == "skip" and claim.lateness > timer.every:
            await store.advance_timer(claim, fired=False)
            if sink is not None:
                sink(TimerSkipped(session_id=timer.session_id, timer_id=timer.timer_id,
                                  fire=timer.fire_count, lateness=claim.lateness))
            return None

        async def delivered() -> None:
            await store.advance_timer(claim, fired=True)
            if sink is not None:
                sink(TimerFired(session_id=timer.session_id, timer_id=timer.timer_id,
                                fire=timer.fire_count, lateness=claim.lateness))

        return await self._send(timer.message, timer.session_id, on_event, claim.request_key,
                                "timer", None, after_begin=delivered)
