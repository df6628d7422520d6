"""The loop holds no authoritative state: a cold loop builds the very bytes a warm one does."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest

from power_loop import (
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    StopReason,
    Store,
    Turn,
    call_tool,
    call_tools,
    reply,
    tool,
)
from tests.loop.support import ModelDown, make_loop, stored_state, texts, trailing_results


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS = [add, mul]
SYSTEM = "You are a calculator."


def conversation(request: LLMRequest) -> Turn | str:
    """A model that answers from the conversation alone, so any process can play it."""
    last = request.messages[-1]
    if last.role == "tool":
        return reply("results: " + ", ".join(r.content for r in trailing_results(request)))
    if last.meta.get("synthetic") == "continue":
        return reply(" and the rest.")
    script: dict[str, Turn | str] = {
        "add": call_tool("add", {"a": 2, "b": 3}, text="Adding."),
        "both": call_tools(("add", {"a": 1, "b": 1}), ("mul", {"a": 3, "b": 4})),
        "long": Turn(text="An answer cut", stop_reason=StopReason.MAX_TOKENS),
        "flaky": Turn(text="A partial answer", error=ModelDown("the model is down"),
                      error_after=1, chunks=2),
    }
    return script.get(last.text, f"You said {last.text!r} after {len(request.messages)}.")


STEPS = ["hello", "add", "both", "long", "flaky", "resume", "flaky", "abort", "bye"]


async def drive(run: Callable[[str], Awaitable[object]]) -> None:
    for step in STEPS:
        if step == "flaky":
            with pytest.raises(ModelDown):
                await run(step)
        else:
            await run(step)


async def test_cold_and_warm_loops_build_identical_requests(store: Store, dsn: str,
                                                            table_prefix: str) -> None:
    warm_llm = ScriptedLLM(conversation, chunk_size=5)
    warm = StatefulAgentLoop(llm=warm_llm, store=store, tools=TOOLS)
    warm_sid = await warm.new_session(system_prompt=SYSTEM)
    cold_sid = await warm.new_session(system_prompt=SYSTEM)

    async def warm_step(step: str) -> object:
        if step == "resume":
            return await warm.resume(warm_sid)
        if step == "abort":
            return await warm.abort_pending(warm_sid)
        return await warm.send(step, session_id=warm_sid)

    cold_requests: list[LLMRequest] = []

    async def cold_step(step: str) -> object:
        llm = ScriptedLLM(conversation, chunk_size=5)
        try:
            async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=table_prefix,
                                         tools=TOOLS) as cold:
                if step == "resume":
                    return await cold.resume(cold_sid)
                if step == "abort":
                    return await cold.abort_pending(cold_sid)
                return await cold.send(step, session_id=cold_sid)
        finally:
            cold_requests.extend(llm.requests)

    await drive(warm_step)
    await drive(cold_step)

    assert len(warm_llm.requests) == len(cold_requests) == 11
    for warm_request, cold_request in zip(warm_llm.requests, cold_requests, strict=True):
        assert warm_request.canonical_bytes() == cold_request.canonical_bytes()
    assert await stored_state(store, warm_sid) == await stored_state(store, cold_sid)
    # The run covered what it claims to: tool rounds, a continuation, a resumed send.
    resumed = warm_llm.requests[-3]
    assert [m.role for m in resumed.messages[-3:]] == ["user", "assistant", "user"]
    assert resumed.messages[-2].meta["partial"] == "stream_error"
    assert [r.cache_prefix for r in warm_llm.requests] == [0, 2, 2, 6, 6, 11, 11, 15, 15, 19,
                                                           21]
    sends = await store.list_sends(warm_sid)
    assert [s.status for s in sends] == ["done"] * 5 + ["aborted", "done"]


async def test_new_loop_continues_from_dsn_and_session_id(store: Store, dsn: str,
                                                          table_prefix: str) -> None:
    first = make_loop(store, ScriptedLLM(conversation), TOOLS)
    sid = await first.new_session(system_prompt=SYSTEM)
    await first.send("hello", session_id=sid)
    await first.send("add", session_id=sid)
    seen = [m.text for m in (h.message for h in await first.history(sid))]
    assert len(seen) == 6

    llm = ScriptedLLM(conversation)
    async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=table_prefix,
                                 tools=TOOLS) as fresh:
        result = await fresh.send("more", session_id=sid)
        assert result.send_index == 2
        assert result.final_text == "You said 'more' after 7."
        assert len(await fresh.history(sid)) == 8
    assert texts(llm.requests[0]) == [*seen, "more"]
    assert llm.requests[0].system == SYSTEM
    assert llm.requests[0].cache_prefix == 6


async def test_window_cache_is_checked_against_the_store(store: Store, dsn: str,
                                                         table_prefix: str) -> None:
    llm_a, llm_b = ScriptedLLM(conversation), ScriptedLLM(conversation)
    a = make_loop(store, llm_a, TOOLS)
    sid = await a.new_session()
    await a.send("from A", session_id=sid)
    async with StatefulAgentLoop(llm=llm_b, dsn=dsn, table_prefix=table_prefix,
                                 tools=TOOLS) as b:
        await b.send("add", session_id=sid)
    await a.send("A again", session_id=sid)
    assert texts(llm_a.requests[-1]) == [
        "from A", "You said 'from A' after 1.", "add", "Adding.", "", "results: 5",
        "A again"]
    history = [h.message for h in await a.history(sid)]
    assert llm_a.requests[-1].messages == tuple(history[:7])


async def test_window_cache_survives_session_recreated_under_same_id(store: Store) -> None:
    llm_a = ScriptedLLM(conversation)
    a = make_loop(store, llm_a, TOOLS)
    await a.new_session(session_id="reused")
    await a.send("old one", session_id="reused")
    await a.send("old two", session_id="reused")
    await store.delete_session("reused")

    b = make_loop(store, ScriptedLLM(conversation), TOOLS)
    await b.new_session(session_id="reused")
    for text in ("new one", "new two", "new three"):
        await b.send(text, session_id="reused")
    await a.send("new four", session_id="reused")
    assert "old one" not in texts(llm_a.requests[-1])
    assert texts(llm_a.requests[-1])[0] == "new one"
    # Exactly what a cold loop would have sent: the new session's history, then the text.
    history = [h.message for h in await a.history("reused")]
    assert llm_a.requests[-1].messages == tuple(history[:-1])


async def _export_as(store: Store, source: str, target: str) -> list[str]:
    """``source``'s export, rewritten to import as the session ``target``."""
    lines = []
    async for line in store.export_session(source):
        item = json.loads(line)
        for row in [item, item.get("row", {})]:
            for key in ("session_id", "id"):
                if row.get(key) == source:
                    row[key] = target
        lines.append(json.dumps(item) + "\n")
    return lines


async def test_window_cache_is_dropped_when_an_import_replaces_the_session(
        store: Store) -> None:
    llm_a = ScriptedLLM(conversation)
    a = make_loop(store, llm_a, TOOLS)
    await a.new_session(session_id="s")
    await a.send("cached one", session_id="s")
    other = make_loop(store, ScriptedLLM(conversation), TOOLS)
    await other.new_session(session_id="donor")
    for text in ("donated one", "donated two"):
        await other.send(text, session_id="donor")

    # Same id, a different history of more messages: only the incarnation tells them apart.
    await store.import_session(await _export_as(store, "donor", "s"), replace=True)
    await a.send("after the import", session_id="s")

    assert texts(llm_a.requests[-1]) == [
        "donated one", "You said 'donated one' after 1.",
        "donated two", "You said 'donated two' after 3.", "after the import"]
    history = [h.message for h in await a.history("s")]
    assert llm_a.requests[-1].messages == tuple(history[:-1])
