"""Durable timers: scheduled by the application or by the agent, fired by workers."""

from power_loop.timers.records import TimerClaim, TimerRecord
from power_loop.timers.tools import TimerLimits, timer_tools

__all__ = ["TimerClaim", "TimerLimits", "TimerRecord", "timer_tools"]
