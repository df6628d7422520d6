"""``hand_over_on_cancel``: a cancelled send is left to the workers instead of ended."""

from __future__ import annotations

import asyncio

import pytest

from power_loop import (
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Tool,
    call_tool,
    hand_over_on_cancel,
    reply,
    tool,
)
from tests.loop.support import lease_is_free, make_loop


class SlowLookup:
    """A tool safe to repeat whose first run never ends (it is cancelled)."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()

    def tool(self) -> Tool:
        @tool(safe_to_repeat=True)
        async def lookup(topic: str) -> str:
            """Look a topic up."""
            self.runs += 1
            if self.runs == 1:
                self.running.set()
                await asyncio.Event().wait()  # until cancelled
            return f"notes on {topic}"

        return lookup


def scripted() -> ScriptedLLM:
    return ScriptedLLM(lambda request: reply("Found it.") if request.messages[-1].role == "tool"
                       else call_tool("lookup", {"topic": "tides"}))


async def send_cut_off_mid_tool(loop: StatefulAgentLoop, sid: str, slow: SlowLookup,
                                *, hand_over: bool) -> None:
    async def run() -> None:
        if hand_over:
            hand_over_on_cancel()
        await loop.send("Look up tides", sid)

    task = asyncio.create_task(run())
    await slow.running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_send_is_handed_over_and_resumed(store: Store) -> None:
    slow = SlowLookup()
    loop = make_loop(store, scripted(), [slow.tool()])
    sid = await loop.new_session()
    await send_cut_off_mid_tool(loop, sid, slow, hand_over=True)

    send = await store.get_send(sid, 0)
    assert (send.status, send.finished_at) == ("pending", None)
    assert (await store.get_session(sid)).pending_send == 0
    assert await lease_is_free(store, sid)  # released at once: no lease to wait out
    assert [h.message.role for h in await loop.history(sid)] == ["user", "assistant"]

    result = await loop.resume(sid)  # what a worker does
    assert result is not None
    assert (result.status, result.final_text, slow.runs) == ("done", "Found it.", 2)
    roles = [h.message.role for h in await loop.history(sid)]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_other_tasks_keep_the_default(store: Store) -> None:
    async def handing_over() -> None:
        hand_over_on_cancel()

    await asyncio.create_task(handing_over())  # set in another task: it does not leak here
    slow = SlowLookup()
    loop = make_loop(store, scripted(), [slow.tool()])
    sid = await loop.new_session()
    await send_cut_off_mid_tool(loop, sid, slow, hand_over=False)
    send = await store.get_send(sid, 0)
    assert send.status == "cancelled"
    assert (await store.get_session(sid)).pending_send is None
