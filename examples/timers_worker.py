"""Durable timers fired by a worker: one-shot and recurring wake-ups, exactly once.

    python examples/timers_worker.py

The application schedules wake-ups; a Worker (here in-process, normally
`power-loop worker --app module:factory` in its own processes) fires them.
"""

from __future__ import annotations

import asyncio

from _common import data_dir

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    reply,
)
from power_loop.worker import Worker


def model(request: LLMRequest) -> Turn:
    last = request.messages[-1]
    source = last.meta.get("source", "user")
    return reply(f"({source}) acting on: {last.text}")


def make_loop(store: Store) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(model), store=store,
                             config=AgentLoopConfig(lease_ttl=5))


async def main() -> None:
    dsn = str(data_dir("timers") / "app.db")
    async with StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn) as loop:
        sid = await loop.new_session(system_prompt="You follow up on refunds.")
        await loop.schedule(sid, "Check whether refund R-17 arrived.", delay=0.5)
        await loop.schedule(sid, "Hourly check-in (every 0.7 s in this demo).", delay=0.2,
                            every=0.7)

        worker = Worker(store=loop.store, loop_factory=make_loop, poll_interval=0.1)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(2.5)
        worker.request_stop()
        stats = await running

        print(f"fired {stats.timers_fired} times; the conversation:")
        for item in await loop.history(sid):
            print(f"  {item.seq:>2} {item.message.role:<9} {item.message.text}")
        for timer in await loop.list_timers(sid):
            print(f"  timer {timer.message[:30]!r}: {timer.status}, fired {timer.fire_count}x")


if __name__ == "__main__":
    asyncio.run(main())
