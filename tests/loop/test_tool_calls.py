"""Tool calls inside a send: context, errors the model reads, parallelism, result order."""

from __future__ import annotations

import asyncio
from typing import Any

from power_loop import (
    ScriptedLLM,
    Store,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    Turn,
    call_tool,
    call_tools,
    reply,
    tool,
)
from power_loop.llm.scripted import ScriptedCall
from tests.loop.support import make_loop, shape, trailing_results


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_context_reaches_the_tool(store: Store) -> None:
    seen: list[ToolContext] = []

    @tool
    async def whoami(note: str, ctx: ToolContext) -> str:
        """Report who is calling."""
        seen.append(ctx)
        return note

    llm = ScriptedLLM(["first", call_tool("whoami", {"note": "hi"}), "done"])
    loop = make_loop(store, llm, [whoami])
    sid = await loop.new_session(metadata={"user": "ann"})
    await loop.send("warm up", session_id=sid)
    result = await loop.send("who?", session_id=sid)
    call = result.messages[1].tool_calls[0]
    [ctx] = seen
    assert (ctx.session_id, ctx.send_index, ctx.call_id) == (sid, 1, call.id)
    assert (ctx.tool_name, ctx.attempt) == ("whoami", 1)
    assert ctx.idempotency_key == f"{sid}:1:{call.id}"
    assert "ctx" not in llm.requests[0].tools[0].parameters["properties"]


async def test_context_carries_session_metadata(store: Store) -> None:
    seen: list[ToolContext] = []

    @tool
    def whoami(ctx: ToolContext) -> str:
        """Report who is calling."""
        seen.append(ctx)
        return "ok"

    metadata = {"user": "ann", "tags": ["a", "b"], "limits": {"n": 3}}
    llm = ScriptedLLM([call_tool("whoami"), "done", call_tool("whoami"), "done"])
    loop = make_loop(store, llm, [whoami])
    sid = await loop.new_session(metadata=metadata)
    await loop.send("who?", session_id=sid)
    # A cold loop (another process) reads it from the store just the same.
    await make_loop(store, llm, [whoami]).send("again?", session_id=sid)
    assert [dict(ctx.session_metadata) for ctx in seen] == [metadata, metadata]
    plain = make_loop(store, ScriptedLLM([call_tool("whoami"), "done"]), [whoami])
    await plain.send("none?", session_id=await plain.new_session())
    assert dict(seen[-1].session_metadata) == {}


async def test_mistakes_become_results_the_model_reads(store: Store) -> None:
    called: list[tuple[int, int]] = []

    @tool
    def careful_add(a: int, b: int) -> int:
        """Add two integers."""
        called.append((a, b))
        return a + b

    llm = ScriptedLLM([
        call_tools(("careful_add", "{not json"), ("careful_add", "[1,2]"), ("nosuch", {}),
                   ("careful_add", {"a": "two", "b": 1}), ("careful_add", {"a": 2, "b": 1})),
        reply("Sorry, some of that went wrong."),
    ])
    loop = make_loop(store, llm, [careful_add])
    sid = await loop.new_session()
    result = await loop.send("go", session_id=sid)
    assert (result.final_text, result.stop_reason, result.status) == (
        "Sorry, some of that went wrong.", "end_turn", "done")
    results = trailing_results(llm.requests[1])
    assert [r.is_error for r in results] == [True, True, True, True, False]
    assert "not valid JSON" in results[0].content
    assert "must be a JSON object, not list" in results[1].content
    assert "unknown tool 'nosuch'" in results[2].content
    assert "Available tools: careful_add" in results[2].content
    assert "invalid arguments for 'careful_add'" in results[3].content
    assert results[4].content == "3"
    assert called == [(2, 1)]
    calls = result.messages[1].tool_calls
    assert [r.call_id for r in results] == [c.id for c in calls]
    assert calls[0].arguments == "{not json"  # kept exactly as the model wrote it


async def test_configured_caps_and_timeout_apply(store: Store) -> None:
    @tool
    def chatty() -> str:
        """Talk a lot."""
        return "blah " * 1000

    @tool
    async def sleepy() -> str:
        """Sleep a long time."""
        await asyncio.sleep(30)
        return "rested"

    llm = ScriptedLLM([call_tools(("chatty", {}), ("sleepy", {})), "ok"])
    loop = make_loop(store, llm, [chatty, sleepy], max_tool_output_chars=200, tool_timeout=0.05)
    sid = await loop.new_session()
    await loop.send("go", session_id=sid)
    chat, sleep = trailing_results(llm.requests[1])
    assert not chat.is_error and 150 < len(chat.content) <= 200
    assert chat.content.startswith("blah blah") and "truncated" in chat.content
    assert sleep.is_error and "did not finish within 0.05s" in sleep.content


async def test_calls_run_concurrently_and_results_keep_call_order(store: Store) -> None:
    both_running = asyncio.Barrier(2)
    second_done = asyncio.Event()
    order: list[str] = []

    @tool
    async def first() -> str:
        """Finishes last."""
        async with asyncio.timeout(10):
            await both_running.wait()
            await second_done.wait()
        order.append("first")
        return "first result"

    @tool
    async def second() -> str:
        """Finishes first."""
        async with asyncio.timeout(10):
            await both_running.wait()
        order.append("second")
        second_done.set()
        return "second result"

    llm = ScriptedLLM([call_tools(("first", {}), ("second", {})), "both done"])
    loop = make_loop(store, llm, [first, second])
    sid = await loop.new_session()
    events = [e async for e in loop.stream("go", session_id=sid)]
    assert order == ["second", "first"]
    finished = [e.name for e in events if isinstance(e, ToolCallFinished)]
    assert finished == ["second", "first"]
    history = await loop.history(sid)
    assert [(h.message.role, h.message.tool_results[0].content if h.message.role == "tool"
             else h.message.text) for h in history[2:4]] == [
        ("tool", "first result"), ("tool", "second result")]
    assert [h.seq for h in history] == [0, 1, 2, 3, 4]
    assert [r.content for r in trailing_results(llm.requests[1])] == ["first result",
                                                                      "second result"]


async def test_max_parallel_tools_serializes(store: Store) -> None:
    running = 0
    peak = 0

    async def work() -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "ok"

    @tool
    async def one() -> str:
        """Work."""
        return await work()

    @tool
    async def two() -> str:
        """Work."""
        return await work()

    @tool
    def three() -> str:
        """Work in a thread."""
        return "ok"

    calls = call_tools(("one", {}), ("two", {}), ("three", {}), ("one", {}))
    serial = make_loop(store, ScriptedLLM([calls, "done"]), [one, two, three],
                       max_parallel_tools=1)
    sid = await serial.new_session()
    events = [e async for e in serial.stream("go", session_id=sid)]
    tool_events = [(e.type, e.call_id) for e in events
                   if isinstance(e, (ToolCallStarted, ToolCallFinished))]
    ids = [c.id for c in (await serial.history(sid))[1].message.tool_calls]
    assert tool_events == [(kind, i) for i in ids
                           for kind in ("ToolCallStarted", "ToolCallFinished")]
    assert peak == 1

    peak = 0
    parallel = make_loop(store, ScriptedLLM([calls, "done"]), [one, two, three])
    sid = await parallel.new_session()
    await parallel.send("go", session_id=sid)
    assert peak == 3


async def test_call_ids_are_made_unique(store: Store) -> None:
    def fixed_id(*names: str) -> Turn:
        return Turn(tool_calls=tuple(ScriptedCall(n, {"a": 1, "b": 1}, id="dup") for n in names))

    llm = ScriptedLLM([fixed_id("add", "add"), "two", fixed_id("add"), "again"])
    loop = make_loop(store, llm, [add])
    sid = await loop.new_session()
    await loop.send("go", session_id=sid)
    await loop.send("again", session_id=sid)
    ids = [c.id for h in await loop.history(sid) for c in h.message.tool_calls]
    assert len(ids) == len(set(ids)) == 3
    assert ids[0] == "dup"
    results = [r.call_id for h in await loop.history(sid) for r in h.message.tool_results]
    assert results == ids
    assert await shape(store, sid) == [(0, "user"), (0, "assistant"), (0, "tool"), (0, "tool"),
                                       (0, "assistant"), (1, "user"), (1, "assistant"),
                                       (1, "tool"), (1, "assistant")]


async def test_results_are_stored_as_soon_as_their_predecessors_are(store: Store) -> None:
    stored_before_second: list[Any] = []

    @tool
    async def quick() -> str:
        """Done at once."""
        return "quick"

    @tool
    async def slow(ctx: ToolContext) -> str:
        """Waits until the quick result is stored."""
        for _ in range(500):
            records = await store.read_messages(ctx.session_id)
            if records[-1].role == "tool":
                stored_before_second.append(records[-1].body["parts"][0]["content"])
                break
            await asyncio.sleep(0.01)
        return "slow"

    llm = ScriptedLLM([call_tools(("quick", {}), ("slow", {})), "done"])
    loop = make_loop(store, llm, [quick, slow])
    sid = await loop.new_session()
    await loop.send("go", session_id=sid)
    assert stored_before_second == ["quick"]


async def test_a_tool_seeing_a_foreign_cancellation_is_just_an_error(store: Store) -> None:
    @tool
    async def wait_for_job() -> str:
        """Wait for a background job that someone else cancels."""
        job: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        job.cancel()
        return await job

    llm = ScriptedLLM([call_tool("wait_for_job"), "The job was cancelled."])
    loop = make_loop(store, llm, [wait_for_job])
    sid = await loop.new_session()
    result = await loop.send("Run the job", session_id=sid)
    assert (result.status, result.final_text) == ("done", "The job was cancelled.")
    [failed] = trailing_results(llm.requests[1])
    assert failed.is_error and "CancelledError" in failed.content
    assert (await store.get_send(sid, 0)).status == "done"
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
