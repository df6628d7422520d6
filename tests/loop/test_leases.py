"""One session, one holder: fail fast or wait for the lease, never interleave two sends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from conformance.waiting import eventually
from power_loop import (
    Lease,
    LeaseLostError,
    LLMRequest,
    ScriptedLLM,
    SessionBusyError,
    StatefulAgentLoop,
    Store,
    ToolContext,
    Turn,
    call_tool,
    reply,
    tool,
)
from tests.loop.support import Refusals, lease_is_free, make_loop, shape


async def test_lease_wait_zero_fails_at_once(store: Store) -> None:
    llm = ScriptedLLM(["unused"])
    loop = make_loop(store, llm, lease_wait=0)
    sid = await loop.new_session()
    held = await store.acquire_lease(sid, "other-process", ttl=60)

    with pytest.raises(SessionBusyError) as raised:
        await loop.send("Hello", session_id=sid)
    assert (raised.value.session_id, raised.value.holder) == (sid, "other-process")
    assert raised.value.retry_after > 0
    for recover in (loop.resume, loop.heal_pending, loop.abort_pending):
        with pytest.raises(SessionBusyError):
            await recover(sid)
    assert llm.requests == []
    assert await store.list_sends(sid) == []
    session = await store.get_session(sid)
    assert (session.next_seq, session.lease_owner, session.lease_epoch) == (
        0, "other-process", held.epoch)
    assert await store.release_lease(held)


async def test_positive_lease_wait_waits_for_the_release(store: Store) -> None:
    order: list[str] = []

    def model(request: LLMRequest) -> Turn:
        order.append("model called")
        return reply("Hello!")

    loop = make_loop(store, ScriptedLLM(model), lease_wait=30)
    sid = await loop.new_session()
    held = await store.acquire_lease(sid, "other-process", ttl=60)
    refusals = Refusals(store)

    async def release_once_waited() -> None:
        await eventually(refusals.seen, "the loop to be refused the lease")
        order.append("released")
        assert await store.release_lease(held)

    releaser = asyncio.create_task(release_once_waited())
    result = await loop.send("Hi", session_id=sid)
    await releaser
    assert result.final_text == "Hello!"
    assert order == ["released", "model called"]
    assert await lease_is_free(store, sid)


async def test_lease_wait_gives_up(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM(["unused"]), lease_wait=0.1)
    sid = await loop.new_session()
    held = await store.acquire_lease(sid, "other-process", ttl=60)
    with pytest.raises(SessionBusyError):
        await loop.send("Hi", session_id=sid)
    assert await store.list_sends(sid) == []
    assert await store.release_lease(held)


async def test_an_expired_lease_is_taken_over(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM(["Mine now."]), lease_wait=30)
    sid = await loop.new_session()
    dead = await store.acquire_lease(sid, "crashed-process", ttl=0.2)
    result = await loop.send("Hi", session_id=sid)
    assert result.final_text == "Mine now."
    session = await store.get_session(sid)
    assert session.lease_epoch > dead.epoch
    assert not await store.release_lease(dead)  # the dead holder's lease is gone


async def test_concurrent_sends_never_interleave(
        store: Store, open_more: Callable[..., Awaitable[Store]]) -> None:
    @tool
    async def think(topic: str) -> str:
        """Think for a while."""
        await asyncio.sleep(0.05)
        return f"thought about {topic}"

    def model(request: LLMRequest) -> Turn:
        last = request.messages[-1]
        if last.role == "tool":
            return reply(f"done with {last.tool_results[0].content}")
        return call_tool("think", {"topic": last.text})

    other_store = await open_more()
    loops = [make_loop(store, ScriptedLLM(model), [think], lease_wait=30),
             StatefulAgentLoop(llm=ScriptedLLM(model), store=other_store, tools=[think])]
    sid = await loops[0].new_session()
    topics = [f"topic {i}" for i in range(6)]
    results = await asyncio.gather(*(loops[i % 2].send(t, session_id=sid)
                                     for i, t in enumerate(topics)))

    assert sorted(r.send_index for r in results) == list(range(6))
    for result, topic in zip(results, topics, strict=True):
        assert result.final_text == f"done with thought about {topic}"
    assert await shape(store, sid) == [
        (i, role) for i in range(6) for role in ("user", "assistant", "tool", "assistant")]
    history = await loops[0].history(sid)
    for i in range(6):
        user, call, outcome, answer = (h.message for h in history[4 * i:4 * i + 4])
        assert outcome.tool_results[0].call_id == call.tool_calls[0].id
        assert answer.text == f"done with thought about {user.text}"
    assert all(s.status == "done" for s in await store.list_sends(sid))


async def test_the_lease_is_renewed_while_a_tool_runs(store: Store) -> None:
    refused: list[str] = []

    @tool
    async def long_job(ctx: ToolContext) -> str:
        """Outlive the lease's ttl several times."""
        for _ in range(3):
            await asyncio.sleep(0.5)
            try:
                stolen = await store.acquire_lease(ctx.session_id, "intruder", ttl=60)
            except SessionBusyError as busy:
                refused.append(str(busy.holder))
            else:
                await store.release_lease(stolen)
        return "done"

    loop = make_loop(store, ScriptedLLM([call_tool("long_job"), "Finished."]), [long_job],
                     lease_ttl=1.0)
    sid = await loop.new_session()
    result = await loop.send("Work", session_id=sid)
    assert result.final_text == "Finished."
    assert len(refused) == 3 and "intruder" not in refused


async def test_a_lost_lease_stops_the_send(store: Store) -> None:
    running = asyncio.Event()

    @tool
    async def long_job() -> str:
        """Run until stopped."""
        running.set()
        await asyncio.Event().wait()
        return "never"

    llm = ScriptedLLM([call_tool("long_job"), "never"])
    loop = make_loop(store, llm, [long_job], lease_ttl=0.3)
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Work", session_id=sid))
    await running.wait()
    # Another process takes the session over (as if this one had stalled past its ttl).
    session = await store.get_session(sid)
    assert session.lease_owner is not None and session.lease_expires_at is not None
    await store.release_lease(Lease(sid, session.lease_owner, session.lease_epoch,
                                    session.lease_expires_at))
    thief = await store.acquire_lease(sid, "new-holder", ttl=60)

    with pytest.raises(LeaseLostError) as raised:
        await task
    assert raised.value.session_id == sid
    after = await store.get_session(sid)
    assert (after.lease_owner, after.lease_epoch) == ("new-holder", thief.epoch)
    assert after.next_seq == session.next_seq  # nothing written once the lease was gone
    assert after.pending_send == 0
    assert len(llm.requests) == 1
