"""What a wait says after its call: ``done`` once the result is stored, ``executing`` while
the outcome is unknown, ``approved`` as a decision either way."""

from __future__ import annotations

import asyncio

import pytest

from power_loop import (
    FeedWait,
    ScriptedLLM,
    Store,
    ToolCallFinished,
    WaitDecidedError,
    call_tool,
    call_tools,
    tool,
)
from power_loop.events.types import Event
from power_loop.store import NewMessage
from power_loop.store.waits import NewWait, waits_of
from tests.approvals.tools import RUNS, _clear_runs, balance, wire  # noqa: F401 (fixture)
from tests.loop.support import make_loop
from tests.store_faults.port_faults import Fault, FaultyDatabase


@tool
async def stuck() -> str:
    """Never finishes (until the test cancels the send)."""
    RUNS.append("stuck")
    await asyncio.Event().wait()
    return "never"


async def _statuses(store: Store, sid: str) -> dict[str, tuple[str, str]]:
    """wait id -> (tool, status) of every wait of send 0."""
    return {w.wait_id: (w.tool_name, w.status)
            for w in await waits_of(store).of_send_index(sid, 0)}


async def test_a_call_that_ran_is_done_and_still_approved_as_a_decision(store: Store) -> None:
    llm = ScriptedLLM([call_tools(("wire", {"amount": 5}), ("balance", {})), "sent"])
    loop = make_loop(store, llm, [wire, balance])
    sid = await loop.new_session()
    (pending,) = (await loop.send("pay bob", sid)).waiting
    before = await _statuses(store, sid)
    assert sorted(before.values()) == [("balance", "held"), ("wire", "waiting")]

    result = await loop.approve(sid, pending.wait_id)
    assert (result.status, result.final_text) == ("done", "sent")
    assert sorted(RUNS) == ["balance", "wire 5"]
    after = await _statuses(store, sid)
    assert sorted(after.values()) == [("balance", "done"), ("wire", "done")]
    with pytest.raises(WaitDecidedError) as again:
        await loop.approve(sid, pending.wait_id)
    assert again.value.status == "approved"
    with pytest.raises(WaitDecidedError) as other:
        await loop.reject(sid, pending.wait_id)
    assert other.value.status == "approved"
    items = [item async for item in loop.watch(sid, follow=False)]
    decided = [(i.wait_id, i.status) for i in items if isinstance(i, FeedWait) and i.decided]
    assert decided == [(pending.wait_id, "approved")]


async def test_a_rejected_call_stays_rejected(store: Store) -> None:
    llm = ScriptedLLM([call_tools(("wire", {"amount": 5}), ("balance", {})), "fine"])
    loop = make_loop(store, llm, [wire, balance])
    sid = await loop.new_session()
    (pending,) = (await loop.send("pay bob", sid)).waiting
    await loop.reject(sid, pending.wait_id, reason="no")
    assert RUNS == ["balance"]
    assert sorted((await _statuses(store, sid)).values()) == [("balance", "done"),
                                                              ("wire", "rejected")]


async def test_a_call_cut_off_by_a_cancellation_stays_executing(store: Store) -> None:
    """``stuck`` is cancelled mid-call: its outcome is unknown. ``wire``, after it in the
    round, finished: its result is stored by the write that ends the send, with its
    ``done``."""
    finished: set[str] = set()
    wired = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, ToolCallFinished) and event.name == "wire":
            finished.add(event.call_id)
            wired.set()

    llm = ScriptedLLM([call_tools(("stuck", {}), ("wire", {"amount": 7})), "unused"])
    loop = make_loop(store, llm, [stuck, wire], on_event=on_event)
    sid = await loop.new_session()
    (pending,) = (await loop.send("go", sid)).waiting
    approving = asyncio.create_task(loop.approve(sid, pending.wait_id))
    await wired.wait()
    approving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await approving
    assert sorted(RUNS) == ["stuck", "wire 7"]
    assert finished == {pending.wait_id}
    statuses = await _statuses(store, sid)
    assert sorted(statuses.values()) == [("stuck", "executing"), ("wire", "done")]
    (send,) = await store.list_sends(sid)
    assert send.status == "cancelled"
    results = [p for m in await store.read_messages(sid) if m.role == "tool"
               for p in m.body["parts"]]
    assert [r["content"] for r in results][1] == "wired 7"


async def test_a_single_approved_call_is_done_when_its_result_is_appended(
        store: Store) -> None:
    llm = ScriptedLLM([call_tool("wire", {"amount": 1}), call_tool("wire", {"amount": 2}),
                       "both"])
    loop = make_loop(store, llm, [wire])
    sid = await loop.new_session()
    (first,) = (await loop.send("go", sid)).waiting
    (second,) = (await loop.approve(sid, first.wait_id)).waiting
    assert (await _statuses(store, sid))[first.wait_id] == ("wire", "done")
    assert (await _statuses(store, sid))[second.wait_id] == ("wire", "waiting")
    await loop.approve(sid, second.wait_id)
    assert set((await _statuses(store, sid)).values()) == {("wire", "done")}


@pytest.mark.parametrize("fault", [Fault.BEGIN, Fault.COMMIT_LOST, Fault.COMMIT_LANDED],
                         ids=lambda f: f.value)
async def test_a_result_and_its_done_land_together_through_faults(store: Store,
                                                                 fault: Fault) -> None:
    """A commit that fails, or whose answer is lost, is settled by reading the result:
    the wait is ``done`` exactly when the result is stored, once."""
    waits = waits_of(store)
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, [NewMessage(0, "user", {"text": "go"})],
                                   owner="asker", ttl=30)
    assert start.lease is not None
    await waits.hold(sid, 0, [NewWait("call_1", "approval", "wire", "{}")],
                     lease=start.lease)
    await waits.decide(sid, "call_1", "approved")
    lease = await store.acquire_lease(sid, "runner", ttl=30)
    assert await waits.start(sid, ["call_1"], epoch=lease.epoch) == {"call_1"}
    db = FaultyDatabase(store._database)
    through = Store(db, store.table_prefix)
    db.plan = [fault]
    seqs = await through.append_messages(sid, [NewMessage(0, "user", {"text": "result"})],
                                         epoch=lease.epoch, expect_seq=1,
                                         finish_waits=["call_1"])
    assert seqs == [1] and db.injected == [fault]
    assert [m.body["text"] for m in await store.read_messages(sid)] == ["go", "result"]
    assert (await _statuses(store, sid))["call_1"] == ("wire", "done")
