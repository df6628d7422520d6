"""Work that keeps failing is parked, seen by an operator, and unparked once fixed.

    python examples/parked_work.py

A timer fires while the model provider is down: the send fails and stays pending, the
worker retries it, and after `max_attempts` failed resumes it parks the session
(a `SessionParked` event) so it cannot hold up other work. An operator lists what is
parked (`power-loop sessions list --parked`, `power-loop timers list --status parked`
from a shell), and once the provider is back unparks it (`power-loop sessions unpark ID`):
the worker finishes the send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from _common import data_dir

from power_loop import (
    Event,
    LLMRequest,
    LLMUnavailableError,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    fail,
    reply,
)
from power_loop.worker import Worker

provider_down = True


def model(request: LLMRequest) -> Turn:
    if provider_down:
        return fail(LLMUnavailableError("the provider is down", provider="scripted"))
    return reply(f"acting on: {request.messages[-1].text}")


def make_loop(store: Store) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(model), store=store)


def show(event: Event) -> None:
    if event.type in {"TimerFired", "SessionParked", "SendFinished"}:
        print(f"  event: {event.type}")


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


async def main() -> None:
    global provider_down
    dsn = str(data_dir("parked") / "app.db")
    async with StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn) as loop:
        store = loop.store
        sid = await loop.new_session(system_prompt="You follow up on refunds.")
        await loop.schedule(sid, "Check whether refund R-17 arrived.", delay=0)

        worker = Worker(store=store, loop_factory=make_loop, poll_interval=0.1,
                        max_attempts=2, on_event=show)
        running = asyncio.create_task(worker.run())

        async def parked() -> bool:
            return bool(await store.list_parked_sessions())

        await until(parked, "the session to be parked")
        for session in await store.list_parked_sessions():
            print(f"parked: session {session.id} (send #{session.pending_send}, "
                  f"{session.resume_attempts} failed resumes)")
        print(f"parked timers: {len(await store.list_timers(status='parked'))} "
              "(the timer itself fired: its message is in the session)")

        provider_down = False  # the provider is back
        await store.unpark_session(sid)

        async def idle() -> bool:
            return (await store.get_session(sid)).pending_send is None

        await until(idle, "the send to finish")
        worker.request_stop()
        stats = await running
        print(f"worker: {stats.sends_resumed} send resumed, "
              f"{stats.sessions_parked} session parked")
        for item in await loop.history(sid):
            print(f"  {item.seq:>2} {item.message.role:<9} {item.message.text}")


if __name__ == "__main__":
    asyncio.run(main())
