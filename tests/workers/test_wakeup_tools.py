"""The agent's own wake-ups: ``schedule_wakeup``, ``cancel_wakeup``, ``list_wakeups``.

A scripted model calls the tools within :class:`~power_loop.timers.TimerLimits`: calls
out of bounds come back to it as tool errors, the wake-up it made fires later through a
worker as a ``source=timer`` message, and a call repeated after a crash (the process
killed after the tool ran, before its result was stored) finds the timer it made
instead of making a second one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from conformance.waiting import eventually
from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    reply,
)
from power_loop import call_tool as call
from power_loop.timers import TimerLimits
from tests.workers import wake_child
from tests.workers.inproc import answers, running, timer_sends, user_texts, worker
from tests.workers.support import REPO, worker_env

LIMITS = TimerLimits(max_scheduled=2, min_delay=1.0, max_delay=3600.0, min_every=60.0)
Step = Turn | Callable[[LLMRequest], Turn]


class Plan:
    """A model following a plan: each step a turn, or a function of the request."""

    def __init__(self, *steps: Step) -> None:
        self.steps: deque[Step] = deque(steps)

    def __call__(self, request: LLMRequest) -> Turn:
        step = self.steps.popleft()
        return step if isinstance(step, Turn) else step(request)


def tool_results(messages: list[Any]) -> list[tuple[str, bool, str]]:
    """``(tool name, is_error, content)`` of each stored tool result."""
    return [(p["name"], p["is_error"], p["content"]) for m in messages if m.role == "tool"
            for p in m.body["parts"]]


def last_result(request: LLMRequest) -> str:
    return request.messages[-1].tool_results[0].content


async def test_wakeup_tools_enforce_their_bounds_and_the_wakeup_fires(store: Store) -> None:
    later: dict[str, str] = {}

    def cancel_the_listed_one(request: LLMRequest) -> Turn:
        later["id"] = last_result(request).split(":")[0]
        return call("cancel_wakeup", {"timer_id": later["id"]})

    plan = Plan(
        call("schedule_wakeup", {"message": "too soon", "delay_seconds": 0.5}),
        call("schedule_wakeup", {"message": "too late", "delay_seconds": 7200}),
        call("schedule_wakeup", {"message": "too often", "delay_seconds": 5,
                                 "every_seconds": 10}),
        call("schedule_wakeup", {"message": "check the oven", "delay_seconds": 1.5}),
        call("schedule_wakeup", {"message": "water the plants", "delay_seconds": 3000,
                                 "every_seconds": 86400}),
        call("schedule_wakeup", {"message": "one too many", "delay_seconds": 100}),
        call("list_wakeups"),
        reply("planned"),
        reply("the oven is fine"),  # the wake-up, later
        call("list_wakeups"),
        cancel_the_listed_one,
        lambda _: call("cancel_wakeup", {"timer_id": later["id"]}),
        call("list_wakeups"),
        reply("all clear"),
    )
    loop = StatefulAgentLoop(llm=ScriptedLLM(plan), store=store,
                             config=AgentLoopConfig(timers=LIMITS))
    sid = await loop.new_session()
    assert (await loop.send("plan my day", sid)).final_text == "planned"
    results = tool_results(await store.read_messages(sid))
    assert [(name, error) for name, error, _ in results] == [
        ("schedule_wakeup", True), ("schedule_wakeup", True), ("schedule_wakeup", True),
        ("schedule_wakeup", False), ("schedule_wakeup", False), ("schedule_wakeup", True),
        ("list_wakeups", False)]
    assert "delay_seconds must be between 1 and 3600" in results[0][2]
    assert "delay_seconds must be between 1 and 3600" in results[1][2]
    assert "every_seconds must be at least 60" in results[2][2]
    assert "already has 2 scheduled timers" in results[5][2]
    timers = await loop.list_timers(sid)
    assert sorted(t.message for t in timers) == ["check the oven", "water the plants"]
    oven = next(t for t in timers if t.message == "check the oven")
    plants = next(t for t in timers if t.message == "water the plants")
    assert (oven.every, plants.every) == (None, 86400.0)
    assert results[3][2].startswith(f"Scheduled wake-up {oven.timer_id} at ")
    listed = results[6][2].splitlines()
    assert [line.split(":")[0] for line in listed] == [oven.timer_id, plants.timer_id]

    # The wake-up fires through a worker, as a timer message in the conversation.
    async def fired() -> bool:
        timer = await store.get_timer(oven.timer_id)
        return timer is not None and timer.status == "done" and \
            (await store.get_session(sid)).pending_send is None

    async with running(worker(store, loop)):
        await eventually(fired, "the wake-up to fire")
    (wake,) = await timer_sends(store, sid)
    assert (wake.request_key, wake.status) == (f"timer:{oven.timer_id}:0", "done")
    assert await user_texts(store, sid) == [("plan my day", None), ("check the oven", "timer")]
    assert await answers(store, sid) == ["planned", "the oven is fine"]

    # Cancelling is idempotent: the second call says there was nothing to cancel.
    assert (await loop.send("anything left?", sid)).final_text == "all clear"
    results = tool_results(await store.read_messages(sid))[7:]
    assert results[0][2].startswith(f"{plants.timer_id}: ")
    assert results[1:] == [
        ("cancel_wakeup", False, f"Cancelled {plants.timer_id}."),
        ("cancel_wakeup", False,
         f"{plants.timer_id} was not scheduled (already fired, cancelled or unknown)."),
        ("list_wakeups", False, "No wake-up is scheduled.")]
    cancelled = await store.get_timer(plants.timer_id)
    assert cancelled is not None and cancelled.status == "cancelled"


async def test_a_wakeup_call_repeated_after_a_crash_makes_one_timer(
        store: Store, dsn: str, table_prefix: str) -> None:
    sid = (await store.create_session()).id
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.workers.wake_child", dsn, table_prefix, sid, cwd=REPO,
        env=worker_env({"POWER_LOOP_CRASH_AT": "after_tool_ran"}))
    assert await child.wait() == -signal.SIGKILL
    (made,) = await store.list_timers(sid)  # the tool ran; its result was never stored
    assert [m.role for m in await store.read_messages(sid)] == ["user", "assistant"]

    loop = wake_child.make_loop(store)
    resumed = await loop.resume(sid)  # once the crashed process's lease lapses
    assert resumed is not None and resumed.status == "done"
    (again,) = await store.list_timers(sid)  # the same call found the same timer
    assert again == made
    ((name, error, content),) = tool_results(await store.read_messages(sid))
    assert (name, error) == ("schedule_wakeup", False)
    assert content.startswith(f"Scheduled wake-up {made.timer_id} at "
                              f"{made.due_at.isoformat()}")
    assert resumed.final_text == "noted: " + content

    async def fired() -> bool:
        timer = await store.get_timer(made.timer_id)
        return timer is not None and timer.status == "done" and \
            (await store.get_session(sid)).pending_send is None

    async with running(worker(store, loop)):
        await eventually(fired, "the wake-up to fire")
    assert await user_texts(store, sid) == [(wake_child.ASK, None), (wake_child.WAKE, "timer")]
    assert (await answers(store, sid))[-1] == "awake: " + wake_child.WAKE
