"""The window cache is the store's: shared by every loop over it, bounded, never stale.

A warm loop, a loop per request over one store, a loop per request from ``dsn=`` and a
cold loop (a store whose cache holds nothing) play the same events on four sessions,
while "another process" (a second store on the same tables) appends, folds, imports
over and deletes and recreates each session: every request they build is byte-for-byte
the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    LLMSummaryFold,
    NewMessage,
    SchemaMissingError,
    SchemaPolicy,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    open_store,
)
from power_loop.llm.messages import Message, encode_message
from power_loop.store.schema import SCHEMA_VERSION_TABLE, drop_tables
from power_loop.store.shared import forget_schema, shared_stores
from power_loop.store.window_cache import WindowCache

StoreOpener = Callable[..., Awaitable[Store]]
SUMMARY = "the summary of everything before"


def model(request: LLMRequest) -> str:
    """Answers from the request alone (any process can play it); summarises folds."""
    if request.metadata.get("purpose") == "fold":
        return SUMMARY
    return f"you said {request.messages[-1].text!r} after {len(request.messages)}"


def tracking() -> AgentLoopConfig:
    """Reads folds (a budget it never reaches): what a folding app's web handler runs."""
    return AgentLoopConfig(fold_strategy=LLMSummaryFold(), context_budget_tokens=1_000_000)


def folding() -> AgentLoopConfig:
    """The other process's loop: a budget small enough to fold at its next send."""
    return AgentLoopConfig(fold_strategy=LLMSummaryFold(keep_fraction=0.3),
                           context_budget_tokens=40)


async def export_as(store: Store, source: str, target: str) -> list[str]:
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


class Style:
    """One way of serving a request: which loop sends for "us"."""

    def __init__(self, name: str, sid: str, make: Callable[[ScriptedLLM], StatefulAgentLoop],
                 keep: bool = False) -> None:
        self.name, self.sid, self.make, self.keep = name, sid, make, keep
        self.llm = ScriptedLLM(model)
        self.loop: StatefulAgentLoop | None = None

    async def send(self, text: str) -> None:
        loop = self.loop or self.make(self.llm)
        try:
            await loop.send(text, session_id=self.sid)
        finally:
            if self.keep:
                self.loop = loop
            else:
                await loop.aclose()

    def requests(self) -> list[bytes]:
        return [r.canonical_bytes() for r in self.llm.requests
                if r.metadata.get("purpose") != "fold"]


async def test_every_way_of_serving_builds_the_same_requests_whatever_others_write(
        store: Store, open_more: StoreOpener, dsn: str, table_prefix: str) -> None:
    other = await open_more()
    cold_store = await open_more(cache_bytes=0)
    styles = [
        Style("warm", "s-warm", lambda llm: StatefulAgentLoop(
            llm=llm, store=store, config=tracking()), keep=True),
        Style("per request", "s-shared", lambda llm: StatefulAgentLoop(
            llm=llm, store=store, config=tracking())),
        Style("dsn", "s-dsn", lambda llm: StatefulAgentLoop(
            llm=llm, dsn=dsn, table_prefix=table_prefix, config=tracking())),
        Style("cold", "s-cold", lambda llm: StatefulAgentLoop(
            llm=llm, store=cold_store, config=tracking())),
    ]
    writer = StatefulAgentLoop(llm=ScriptedLLM(model), store=other)
    folder = StatefulAgentLoop(llm=ScriptedLLM(model), store=other, config=folding())
    donor = await writer.new_session(session_id="donor")
    # Longer than the sessions it replaces: only the incarnation tells the cache apart.
    for text in ("donated one", *(f"donated {i}" for i in range(7))):
        await writer.send(text, session_id=donor)
    for style in styles:
        await store.create_session(style.sid, system_prompt="Be brief.")

    async def everyone(step: Callable[[Style], Awaitable[object]]) -> None:
        for style in styles:
            await step(style)

    for text in ("one", "two"):
        await everyone(lambda s, text=text: s.send(text))  # type: ignore[misc]
    await everyone(lambda s: writer.send("appended elsewhere", session_id=s.sid))
    await everyone(lambda s: s.send("after an append"))
    await everyone(lambda s: folder.send("folded elsewhere", session_id=s.sid))
    assert all([await other.latest_fold(s.sid) is not None for s in styles])
    await everyone(lambda s: s.send("after a fold"))

    async def replace(style: Style) -> None:
        await other.import_session(await export_as(other, donor, style.sid), replace=True)

    await everyone(replace)
    await everyone(lambda s: s.send("after an import"))

    async def recreate(style: Style) -> None:
        await other.delete_session(style.sid)
        await other.create_session(style.sid, system_prompt="Be brief.")
        for i in range(10):  # again longer than what the cache may hold
            await writer.send("recreated" if i == 0 else f"recreated {i}", session_id=style.sid)

    await everyone(recreate)
    await everyone(lambda s: s.send("after a delete"))

    expected = styles[-1].requests()  # the cold loop: built from the store alone
    assert len(expected) == 6
    for style in styles[:-1]:
        assert style.requests() == expected, style.name
    texts = [json.loads(r)["messages"] for r in expected]
    assert SUMMARY in json.dumps(texts[3])  # the fold shows in the next request
    assert "donated one" in json.dumps(texts[4])  # the imported history replaced it
    assert [m["parts"][0]["text"] for m in texts[5]][:1] == ["recreated"]
    # The cache did the serving: the warm and per-request loops hit it after each write
    # of another process (and completed the window from the store, or rebuilt it).
    stats = store.window_cache.stats()
    assert stats.hits >= 10 and stats.entries == 2
    assert cold_store.window_cache.stats().entries == 0
    assert styles[0].loop is not None
    await styles[0].loop.aclose()


def _pairs(count: int, words: int) -> list[NewMessage]:
    user = encode_message(Message.user("question " * words))
    answer = encode_message(Message.assistant("answer " * words))
    return [NewMessage(i // 2, "user" if i % 2 == 0 else "assistant",
                       user if i % 2 == 0 else answer) for i in range(count)]


async def test_the_cache_stays_within_its_bound(open_more: StoreOpener) -> None:
    bound = 60_000
    small = await open_more(cache_bytes=bound)
    loop = StatefulAgentLoop(llm=ScriptedLLM(model), store=small)
    sids = []
    for _ in range(6):
        sid = (await small.create_session()).id
        await small.append_messages(sid, _pairs(20, 100))
        await loop.send("hello", session_id=sid)
        sids.append(sid)
        stats = small.window_cache.stats()
        assert stats.bytes <= bound
    stats = small.window_cache.stats()
    assert stats.max_bytes == bound and stats.misses == 6 and stats.evictions > 0
    assert 0 < stats.entries < 6
    # The newest session is held, the oldest was dropped: a send to each says so.
    await loop.send("again", session_id=sids[-1])
    assert small.window_cache.stats().hits == 1
    await loop.send("again", session_id=sids[0])
    assert small.window_cache.stats().misses == 7
    # A session larger than the whole bound is served, and never held.
    big = (await small.create_session()).id
    await small.append_messages(big, _pairs(200, 100))
    before = small.window_cache.stats()
    await loop.send("hello", session_id=big)
    after = small.window_cache.stats()
    assert after.bytes <= bound and after.entries <= before.entries


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "take"]), st.integers(0, 7),
                              st.integers(0, 400)), max_size=60),
       bound=st.integers(0, 1_000))
def test_the_cache_accounts_every_byte(ops: list[tuple[str, int, int]], bound: int) -> None:
    cache: WindowCache[int] = WindowCache(bound)
    held: dict[int, int] = {}  # what a plain LRU model holds: key -> size
    order: list[int] = []
    for op, key, size in ops:
        if op == "put":
            held.pop(key, None)
            if key in order:
                order.remove(key)
            cache.put(key, size, size)
            if size <= bound:
                held[key], order = size, [*order, key]
                while sum(held.values()) > bound:
                    del held[order.pop(0)]
        else:
            assert cache.take(key) == held.pop(key, None)
            if key in order:
                order.remove(key)
    stats = cache.stats()
    assert stats.bytes == sum(held.values()) <= bound
    assert stats.entries == len(held)


async def test_dsn_loops_share_one_store_per_event_loop(dsn: str, table_prefix: str) -> None:
    before = shared_stores()

    def dsn_loop() -> StatefulAgentLoop:
        # No grace: the last loop's close closes the store (test_dsn_grace.py has the grace).
        return StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn, table_prefix=table_prefix,
                                 store_grace=0)

    async with dsn_loop() as a, dsn_loop() as b:
        assert a.store is b.store
        assert shared_stores() == before + 1
        sid = await a.new_session()
        await a.send("from a", session_id=sid)
        await b.send("from b", session_id=sid)
        assert a.store.window_cache.stats().hits == 1  # b found a's window

        def elsewhere() -> tuple[bool, int]:
            async def run() -> tuple[bool, int]:
                async with dsn_loop() as c:
                    result = await c.send("from another event loop", session_id=sid)
                    return c.store is a.store, result.send_index
            return asyncio.run(run())

        same, index = await asyncio.to_thread(elsewhere)
        assert not same and index == 2  # its own store (connections), the same tables
        await a.send("a again", session_id=sid)
    assert shared_stores() == before
    # The next loop from this DSN opens the store again and finds the windows warm.
    async with dsn_loop() as d:
        await d.send("after every loop closed", session_id=sid)
        assert d.store.window_cache.stats().hits >= 3
        history: list[Any] = await d.history(sid)
        assert len(history) == 10


async def test_a_dsn_loop_per_request_checks_the_schema_once(dsn: str, table_prefix: str,
                                                               store: Store) -> None:
    """After the first open, dsn= loops skip the schema check: shown by a version table
    dropped behind the process's back staying dropped (a check would recreate it)."""
    def dsn_loop() -> StatefulAgentLoop:  # no grace: each request opens the store again
        return StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn, table_prefix=table_prefix,
                                 store_grace=0)

    async with dsn_loop() as first:
        sid = await first.new_session()
        await first.send("hello", session_id=sid)
    async with store._database.autocommit() as conn:
        for statement in drop_tables(store._database.dialect, table_prefix,
                                     [SCHEMA_VERSION_TABLE]):
            await conn.execute(statement)
    for text in ("second request", "third request"):
        async with dsn_loop() as loop:
            await loop.send(text, session_id=sid)
    with pytest.raises(SchemaMissingError):
        await open_store(dsn, table_prefix=table_prefix, schema=SchemaPolicy.VERIFY)
    forget_schema(table_prefix)  # now the next dsn= loop checks, and repairs, the schema
    async with dsn_loop() as loop:
        await loop.send("fourth request", session_id=sid)
    verified = await open_store(dsn, table_prefix=table_prefix, schema=SchemaPolicy.VERIFY)
    await verified.aclose()
