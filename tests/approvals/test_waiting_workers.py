"""Waiting is a state, not a crash: workers leave it alone, expiries end it once, and a
decision recorded without continuing is finished by a worker."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.waiting import eventually
from power_loop import ScriptedLLM, Store, WaitDecidedError, call_tool, tool
from power_loop.store.waits import expiry_timer_id, waits_of
from power_loop.testing import drop_store_tables, fresh_prefix
from tests.loop.support import make_loop
from tests.workers.inproc import running, worker

RUNS: list[int] = []


@tool(requires_approval=True, approval_expires=0.3)
def launch(n: int) -> str:
    """Launch."""
    RUNS.append(n)
    return f"launched {n}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    RUNS.clear()


def model() -> ScriptedLLM:
    return ScriptedLLM(lambda request: (
        call_tool("launch", {"n": 1}) if request.messages[-1].role == "user"
        else f"after: {request.messages[-1].tool_results[0].content}"))


async def test_workers_never_claim_a_waiting_send(store: Store) -> None:
    @tool(requires_approval=True)
    def launch(n: int) -> str:
        """Launch (waits forever)."""
        RUNS.append(n)
        return "launched"

    loop = make_loop(store, model(), [launch])
    sid = await loop.new_session()
    waiting = await loop.send("go", sid)
    assert waiting.status == "waiting"
    claims, parked = await store.claim_stranded_sessions("w", ttl=5, limit=10, max_attempts=1)
    assert (claims, parked) == ([], [])
    session = await store.get_session(sid)
    assert session.resume_attempts == 0 and session.parked_at is None
    # Once decided (without continuing here), the send is work for a worker again.
    (call,) = waiting.waiting
    left = await loop.approve(sid, call.wait_id, resume=False)
    assert (left.status, left.waiting) == ("pending", ())
    async with running(worker(store, loop)):
        async def finished() -> bool:
            return (await store.get_session(sid)).pending_send is None

        await eventually(finished, "a worker to finish the approved send")
    assert RUNS == [1]
    assert (await store.get_send(sid, 0)).status == "done"


async def test_an_unanswered_approval_expires_once_into_a_rejection(store: Store) -> None:
    llm = model()
    loop = make_loop(store, llm, [launch])
    sid = await loop.new_session()
    waiting = await loop.send("go", sid)
    (call,) = waiting.waiting
    assert call.expires_at is not None
    timer = await store.get_timer(expiry_timer_id(sid, call.wait_id))
    assert timer is not None and timer.kind == "expiry" and timer.status == "scheduled"
    async with running(worker(store, loop)) as task:
        async def finished() -> bool:
            return (await store.get_session(sid)).pending_send is None

        await eventually(finished, "the expiry to end the wait and the send to finish")
    stats = task.result()
    assert stats.timers_fired == 1
    assert RUNS == []
    (wait,) = await waits_of(store).of_send_index(sid, 0)
    assert wait.status == "expired"
    assert "in time" in llm.requests[-1].messages[-1].tool_results[0].content
    done = await store.get_timer(timer.timer_id)
    assert done is not None and done.status == "done"
    with pytest.raises(WaitDecidedError) as late:
        await loop.approve(sid, call.wait_id)
    assert late.value.status == "expired"


async def test_a_decision_in_time_cancels_the_expiry(store: Store) -> None:
    loop = make_loop(store, model(), [launch])
    sid = await loop.new_session()
    (call,) = (await loop.send("go", sid)).waiting
    result = await loop.approve(sid, call.wait_id)
    assert result.final_text == "after: launched 1"
    timer = await store.get_timer(expiry_timer_id(sid, call.wait_id))
    assert timer is not None and timer.status == "cancelled"
    assert RUNS == [1]


async def test_a_waiting_session_moves_with_export_and_import(
        store: Store, open_more: Any) -> None:
    loop = make_loop(store, model(), [launch])
    sid = await loop.new_session()
    (call,) = (await loop.send("go", sid)).waiting
    lines = [line async for line in store.export_session(sid)]
    assert any('"table":"waits"' in line for line in lines)
    assert any('"kind":"expiry"' in line for line in lines)
    other = await open_more(table_prefix=fresh_prefix())
    try:
        moved = make_loop(other, model(), [launch])
        await other.import_session(lines)
        assert [w.wait_id for w in await moved.waiting_for(sid)] == [call.wait_id]
        result = await moved.approve(sid, call.wait_id)
        assert result.final_text == "after: launched 1"
        assert RUNS == [1]
        again = [line async for line in other.export_session(sid)]
        assert any('"status":"done"' in line for line in again)
    finally:
        await drop_store_tables(other)
