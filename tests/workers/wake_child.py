"""An agent that schedules its own wake-up, run as a child process that can crash.

``python -m tests.workers.wake_child <dsn> <prefix> <session_id>`` sends ``wake me``;
the model calls ``schedule_wakeup`` and, once the tool answers, says it noted it. Run
with ``POWER_LOOP_CRASH_AT=after_tool_ran`` the process dies after the tool made the
timer and before its result is stored, so resuming the send runs the tool again.
"""

from __future__ import annotations

import asyncio
import sys

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    call_tool,
    reply,
)
from power_loop.timers import TimerLimits

LIMITS = TimerLimits(max_scheduled=3, min_delay=1.0, max_delay=3600.0, min_every=60.0)
ASK = "wake me"
WAKE = "wake up"


def script(request: LLMRequest) -> Turn:
    last = request.messages[-1]
    if last.role == "tool":
        return reply("noted: " + last.tool_results[0].content)
    if last.text == ASK:
        return call_tool("schedule_wakeup", {"message": WAKE, "delay_seconds": 1.0})
    return reply("awake: " + last.text)


CONFIG = AgentLoopConfig(timers=LIMITS, lease_ttl=1.0)


def make_loop(store: Store) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store, config=CONFIG)


async def run(dsn: str, prefix: str, session_id: str) -> None:
    async with StatefulAgentLoop(llm=ScriptedLLM(script), dsn=dsn, table_prefix=prefix,
                                 config=CONFIG) as loop:
        await loop.send(ASK, session_id)


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:4]))
