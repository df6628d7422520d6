"""Cooperative cancellation: the partial answer is kept and marked, the history stays valid."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from conformance.waiting import eventually
from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    TextChunk,
    ToolCallFinished,
    Turn,
    call_tool,
    call_tools,
    tool,
)
from power_loop.llm.service import StreamItem
from tests.loop.support import (
    ModelDown,
    Refusals,
    StallingLLM,
    lease_is_free,
    make_loop,
    shape,
    texts,
)

PIECES = ["Once upon ", "a time"]


async def assert_cancelled(store: Store, sid: str, send_index: int = 0) -> None:
    send = await store.get_send(sid, send_index)
    assert (send.status, send.stop_reason) == ("cancelled", "cancelled")
    assert send.finished_at is not None
    session = await store.get_session(sid)
    assert session.pending_send is None
    assert await lease_is_free(store, sid)


async def assert_next_send_works(loop: StatefulAgentLoop, sid: str) -> None:
    result = await loop.send("still there?", session_id=sid)
    assert (result.final_text, result.status) == ("yes", "done")


async def test_cancel_while_the_model_streams(store: Store) -> None:
    llm = StallingLLM(PIECES, then=ScriptedLLM(["yes"]))
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Tell me a story", session_id=sid))
    await llm.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await assert_cancelled(store, sid)
    [_, partial] = [h.message for h in await loop.history(sid)]
    assert (partial.role, partial.text) == ("assistant", "Once upon a time")
    assert partial.meta["partial"] == "cancelled"
    await assert_next_send_works(loop, sid)
    assert texts(llm.requests[-1]) == ["Tell me a story", "Once upon a time", "still there?"]


async def test_cancel_before_any_text(store: Store) -> None:
    llm = StallingLLM([], then=ScriptedLLM(["yes"]))
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Hello?", session_id=sid))
    await llm.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_cancelled(store, sid)
    assert await shape(store, sid) == [(0, "user")]
    await assert_next_send_works(loop, sid)


async def test_cancel_while_a_tool_runs(store: Store) -> None:
    running = asyncio.Event()
    outcome: list[str] = []

    @tool
    async def slow_job() -> str:
        """Take a long time."""
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return "finished"

    llm = ScriptedLLM([call_tool("slow_job", text="Starting."), "yes"])
    loop = make_loop(store, llm, [slow_job])
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Run it", session_id=sid))
    await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert outcome == ["cancelled"]
    await assert_cancelled(store, sid)
    history = [h.message for h in await loop.history(sid)]
    assert [m.role for m in history] == ["user", "assistant", "tool"]
    [result] = history[2].tool_results
    assert result.call_id == history[1].tool_calls[0].id
    assert result.is_error and "cancelled" in result.content
    assert history[2].meta["synthetic"] == "cancelled"
    assert not any(m.meta.get("partial") for m in history)
    await assert_next_send_works(loop, sid)


async def test_finished_results_survive_the_cancellation(store: Store) -> None:
    @tool
    async def hangs() -> str:
        """Never finishes."""
        await asyncio.sleep(30)
        return "never"

    @tool
    async def quick() -> str:
        """Finishes at once."""
        return "quick result"

    llm = ScriptedLLM([call_tools(("hangs", {}), ("quick", {})), "yes"])
    loop = make_loop(store, llm, [hangs, quick])
    sid = await loop.new_session()
    async with aclosing(loop.stream("Run both", session_id=sid)) as events:
        async for event in events:
            if isinstance(event, ToolCallFinished):
                assert event.name == "quick"
                break

    await assert_cancelled(store, sid)
    history = [h.message for h in await loop.history(sid)]
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool"]
    first, second = history[2].tool_results[0], history[3].tool_results[0]
    assert (first.name, first.is_error, history[2].meta["synthetic"]) == ("hangs", True,
                                                                         "cancelled")
    assert (second.name, second.content, second.is_error) == ("quick", "quick result", False)
    assert "synthetic" not in history[3].meta
    await assert_next_send_works(loop, sid)


async def test_leaving_stream_early_cancels_the_send(store: Store) -> None:
    llm = StallingLLM(PIECES, then=ScriptedLLM(["yes"]))
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    seen: list[str] = []
    async with aclosing(loop.stream("Tell me a story", session_id=sid)) as events:
        async for event in events:
            if isinstance(event, TextChunk):
                seen.append(event.text)
                await llm.streaming.wait()
                break

    assert seen == ["Once upon "]
    await assert_cancelled(store, sid)
    partial = (await loop.history(sid))[-1].message
    assert (partial.text, partial.meta["partial"]) == ("Once upon a time", "cancelled")
    await assert_next_send_works(loop, sid)


async def test_breaking_out_of_stream_frees_the_session(store: Store) -> None:
    llm = StallingLLM(PIECES, then=ScriptedLLM(["yes"]))
    loop = make_loop(store, llm, lease_wait=30)
    sid = await loop.new_session()
    async for event in loop.stream("Tell me a story", session_id=sid):
        if isinstance(event, TextChunk):
            await llm.streaming.wait()
            break
    # The abandoned generator is closed by the event loop; the next send waits for it.
    await assert_next_send_works(loop, sid)
    await assert_cancelled(store, sid)


async def test_cancel_while_waiting_for_the_lease(store: Store, dsn: str,
                                                  table_prefix: str) -> None:
    sid = await store.create_session()
    held = await store.acquire_lease(sid.id, "someone-else", ttl=60)
    llm = ScriptedLLM(["unused"])
    # The waiting loop is another process with its own store. (The cancellation may land
    # inside one of its attempts to take the lease; on SQLite that can wedge its
    # connection, see test_cancelled_write_leaves_the_store_usable. Closing the store
    # ends whatever it left open, so this test is about the loop alone.)
    async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=table_prefix,
                                 config=AgentLoopConfig(lease_wait=30)) as waiting:
        refusals = Refusals(waiting.store)
        task = asyncio.create_task(waiting.send("Hello", session_id=sid.id))
        await eventually(refusals.seen, "the loop to be refused the lease")  # it waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await store.list_sends(sid.id) == []
    assert (await store.get_session(sid.id)).next_seq == 0
    assert llm.requests == []
    assert await store.release_lease(held)


async def test_cancelled_resume_is_cancelled_too(store: Store) -> None:
    stalling = StallingLLM(["More "], then=ScriptedLLM(["yes"]))
    failing = ScriptedLLM([Turn(text="Partial", error=ModelDown("down"), error_after=1)])
    sid = await make_loop(store, failing).new_session()
    with pytest.raises(ModelDown):
        await make_loop(store, failing).send("Go", session_id=sid)
    loop = make_loop(store, stalling)
    task = asyncio.create_task(loop.resume(sid))
    await stalling.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_cancelled(store, sid)
    history = [h.message for h in await loop.history(sid)]
    assert [(m.role, m.text, m.meta.get("partial")) for m in history[:2]] == [
        ("user", "Go", None), ("assistant", "Partial", "stream_error")]
    # The continuation prompt is stored only with an answer, so the two pieces may be
    # adjacent; either way the cancelled piece is last and marked.
    assert [m.role for m in history[2:-1]] in ([], ["user"])
    assert (history[-1].role, history[-1].text) == ("assistant", "More ")
    assert history[-1].meta["partial"] == "cancelled"
    await assert_next_send_works(loop, sid)


class CancelledOnArrival:
    """A model whose caller is cancelled the moment the complete answer has arrived."""

    def __init__(self, inner: ScriptedLLM) -> None:
        self._inner = inner
        self.requests = inner.requests

    @property
    def model(self) -> str:
        return self._inner.model

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        async for item in self._inner.stream(request):
            yield item
        task = asyncio.current_task()
        assert task is not None
        task.cancel()


async def test_cancel_as_the_answer_arrives_keeps_it(store: Store) -> None:
    loop = make_loop(store, CancelledOnArrival(ScriptedLLM(["The whole answer."])))
    sid = await loop.new_session()
    chunks: list[str] = []
    with pytest.raises(asyncio.CancelledError):
        async for event in loop.stream("Question", session_id=sid):
            if isinstance(event, TextChunk):
                chunks.append(event.text)
    assert "".join(chunks) == "The whole answer."
    await assert_cancelled(store, sid)
    history = [h.message for h in await loop.history(sid)]
    assert [(m.role, m.text) for m in history] == [("user", "Question"),
                                                   ("assistant", "The whole answer.")]
    assert history[-1].meta["partial"] == "cancelled"  # kept, and marked as cut short


async def test_cancelled_write_leaves_the_store_usable(store: Store) -> None:
    # The cancellation reaches the final write while it waits on the database (on
    # SQLite: on BEGIN IMMEDIATE); the connection must not stay inside a transaction.
    loop = make_loop(store, CancelledOnArrival(ScriptedLLM(["The whole answer."])))
    sid = await loop.new_session()
    with pytest.raises(asyncio.CancelledError):
        await loop.send("Question", session_id=sid)
    await assert_cancelled(store, sid)
    other = make_loop(store, ScriptedLLM(["Fine."]))
    other_sid = await other.new_session()
    assert (await other.send("Hello", session_id=other_sid)).final_text == "Fine."
    assert len(await loop.history(sid)) == 2


async def test_cancelled_read_leaves_the_store_usable(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM(["Hi."]))
    sid = await loop.new_session()
    await loop.send("Hello", session_id=sid)
    # Cancel reads at successive points of their way through the driver (on SQLite,
    # one of them lands while a reader awaits its BEGIN).
    for yields in range(8):
        reading = asyncio.create_task(loop.history(sid))
        for _ in range(yields):
            await asyncio.sleep(0)
        reading.cancel()
        try:
            await reading
        except asyncio.CancelledError:
            pass
        for _ in range(3):  # more reads than reader connections: each is used again
            assert len(await loop.history(sid)) == 2


async def test_a_send_cancelled_while_its_lease_is_being_taken_hands_it_back(
        store: Store) -> None:
    # Cancelled after every number of event-loop steps up to well past the first write:
    # some land while begin_send's write is in flight, and may see it commit. Whatever
    # the send got to, nothing may keep the session's lease.
    loop = make_loop(store, ScriptedLLM(lambda _: Turn("ok")))
    for steps in range(40):
        sid = await loop.new_session()
        send = asyncio.create_task(loop.send("hi", session_id=sid))
        for _ in range(steps):
            await asyncio.sleep(0)
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)
        assert await lease_is_free(store, sid), steps


async def test_a_claim_cancelled_in_flight_hands_its_lease_back(store: Store) -> None:
    for steps in range(30):
        sid = (await store.create_session()).id
        start = await store.begin_send(sid, [], owner=f"crashed-{steps}", ttl=30)
        assert start.lease is not None
        await store.release_lease(start.lease)
        claim = asyncio.create_task(store.claim_session(sid, owner=f"w-{steps}", ttl=30))
        for _ in range(steps):
            await asyncio.sleep(0)
        claim.cancel()
        outcome = (await asyncio.gather(claim, return_exceptions=True))[0]
        if isinstance(outcome, asyncio.CancelledError):
            assert await lease_is_free(store, sid), steps
