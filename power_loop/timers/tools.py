"""Tools that let the agent schedule (and cancel) its own wake-ups, within bounds.

``schedule_wakeup`` derives the timer's id from the call's idempotency key, so a call
repeated after a crash finds the timer it already made instead of making a second one:
the tool is safe to repeat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from power_loop.context.active import active_run
from power_loop.errors import InvalidArgumentError
from power_loop.tools.context import ToolContext
from power_loop.tools.tool import Tool, ToolError, tool


@dataclass(frozen=True, slots=True)
class TimerLimits:
    """Bounds on the wake-ups an agent schedules for itself.

    Attributes:
        max_scheduled: Scheduled timers one session may have at once.
        min_delay: The soonest wake-up, in seconds.
        max_delay: The latest wake-up, in seconds.
        min_every: The shortest period of a recurring wake-up, in seconds.
    """

    max_scheduled: int = 10
    min_delay: float = 1.0
    max_delay: float = 30 * 86_400.0
    min_every: float = 60.0

    def __post_init__(self) -> None:
        if self.max_scheduled < 1 or not 0 <= self.min_delay <= self.max_delay or \
                self.min_every <= 0:
            raise InvalidArgumentError("TimerLimits: max_scheduled >= 1, 0 <= min_delay <= "
                                       "max_delay, min_every > 0")


def timer_tools(limits: TimerLimits) -> list[Tool]:
    """``schedule_wakeup``, ``cancel_wakeup`` and ``list_wakeups`` within ``limits``."""

    @tool(safe_to_repeat=True)
    async def schedule_wakeup(message: str, delay_seconds: float, context: ToolContext,
                              every_seconds: float | None = None) -> str:
        """Wake yourself up later: the message arrives in this conversation as if sent.

        Args:
            message: What you want to be told when you wake up (your own reminder).
            delay_seconds: Seconds from now until the first wake-up.
            every_seconds: Repeat every this many seconds (omit for a single wake-up).
        """
        if not limits.min_delay <= delay_seconds <= limits.max_delay:
            raise ToolError(f"Error: delay_seconds must be between {limits.min_delay:g} and "
                            f"{limits.max_delay:g}")
        if every_seconds is not None and every_seconds < limits.min_every:
            raise ToolError(f"Error: every_seconds must be at least {limits.min_every:g}")
        run = active_run("schedule_wakeup")
        timer_id = "wake-" + hashlib.sha256(context.idempotency_key.encode()).hexdigest()[:32]
        try:
            timer = await run.store.schedule_timer(
                run.session_id, message, delay=delay_seconds, every=every_seconds,
                timer_id=timer_id, epoch=run.epoch, max_scheduled=limits.max_scheduled)
        except InvalidArgumentError as exc:
            raise ToolError(f"Error: {exc.message}") from None
        repeat = f", then every {every_seconds:g}s" if every_seconds else ""
        return (f"Scheduled wake-up {timer.timer_id} at {timer.due_at.isoformat()} "
                f"(UTC){repeat}.")

    @tool(safe_to_repeat=True)
    async def cancel_wakeup(timer_id: str) -> str:
        """Cancel one of your scheduled wake-ups.

        Args:
            timer_id: The id schedule_wakeup or list_wakeups gave.
        """
        run = active_run("cancel_wakeup")
        if await run.store.cancel_timer(timer_id, session_id=run.session_id):
            return f"Cancelled {timer_id}."
        return f"{timer_id} was not scheduled (already fired, cancelled or unknown)."

    @tool(safe_to_repeat=True)
    async def list_wakeups() -> str:
        """Your scheduled wake-ups in this conversation."""
        run = active_run("list_wakeups")
        timers = await run.store.list_timers(run.session_id, status="scheduled")
        if not timers:
            return "No wake-up is scheduled."
        return "\n".join(
            f"{t.timer_id}: {t.due_at.isoformat()} (UTC)"
            f"{f', every {t.every:g}s' if t.every else ''}: {t.message}" for t in timers)

    return [schedule_wakeup, cancel_wakeup, list_wakeups]
