"""The session feed: order, cursors, following other stores' commits, deletion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    FeedMessage,
    FeedSend,
    InvalidArgumentError,
    Message,
    NewMessage,
    ScriptedLLM,
    SessionNotFoundError,
    StatefulAgentLoop,
    Store,
    Usage,
    call_tool,
    reply,
    tool,
)
from power_loop.llm.messages import encode_message
from tests.feed.support import collect, expected_keys, key, read_all

OpenMore = Callable[..., Awaitable[Store]]
FAST = (0.01, 0.05)


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _body(text: str) -> dict[str, Any]:
    return encode_message(Message.user(text))


def _loop(store: Store, script: list) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=[add],
                             config=AgentLoopConfig())


async def test_every_cursor_resumes_exactly_after_its_item(store: Store,
                                                           open_more: OpenMore) -> None:
    loop = _loop(store, [call_tool("add", {"a": 1, "b": 2}, usage=Usage(9, 1)),
                         reply("3", usage=Usage(20, 2)), reply("bye")])
    sid = await loop.new_session()
    await loop.send("1 + 2?", sid)
    await loop.send("bye", sid)
    # A third send still running: opened, with one more message, not finished.
    start = await store.begin_send(sid, [NewMessage(0, "user", _body("more"))], owner="w",
                                   ttl=60)
    assert start.lease is not None
    await store.append_messages(sid, [NewMessage(2, "assistant", _body("thinking"))],
                                epoch=start.lease.epoch)
    reader = _loop(await open_more(), [])
    full = await read_all(reader, sid)
    assert [key(i) for i in full] == await expected_keys(store, sid)
    assert len({i.cursor for i in full}) == len(full)
    for n, item in enumerate(full):
        assert await read_all(reader, sid, after=item.cursor) == full[n + 1:]
    first_end = full[5]
    assert isinstance(first_end, FeedSend) and first_end.finished
    assert (first_end.status, first_end.rounds, first_end.usage.input_tokens) == ("done", 2, 29)
    message = full[1]
    assert isinstance(message, FeedMessage) and message.message.text == "1 + 2?"


async def test_a_watcher_follows_another_stores_sends(store: Store,
                                                      open_more: OpenMore) -> None:
    sid = await _loop(store, []).new_session()
    watcher = _loop(await open_more(), [])
    sender = _loop(await open_more(), [call_tool("add", {"a": 2, "b": 2}), reply("4"),
                                       reply("ok")])
    follow = asyncio.create_task(collect(watcher.watch(sid, poll=FAST), until_finished=1))
    await sender.send("2 + 2?", sid)
    await sender.send("thanks", sid)
    async with asyncio.timeout(60):
        got = await follow
    assert [key(i) for i in got] == await expected_keys(store, sid)
    assert got == await read_all(watcher, sid)


@pytest.mark.backends("postgresql")
async def test_postgresql_wakes_the_feed_by_notify(store: Store, open_more: OpenMore) -> None:
    sid = await _loop(store, []).new_session()
    sender = _loop(await open_more(), [reply("one"), reply("two")])
    await sender.send("first", sid)
    got: list[FeedSend | FeedMessage] = []
    first_done = asyncio.Event()

    async def follow() -> None:
        # An hour between polls: only a notification can bring the second send in time.
        async for item in _loop(await open_more(), []).watch(sid, poll=(3600, 3600)):
            assert isinstance(item, (FeedSend, FeedMessage))
            got.append(item)
            if isinstance(item, FeedSend) and item.finished:
                if item.send_index == 1:
                    return
                first_done.set()

    task = asyncio.create_task(follow())
    async with asyncio.timeout(60):
        await first_done.wait()  # the first read is over; the watcher now sleeps
        await sender.send("second", sid)
        await task
    assert [key(i) for i in got] == await expected_keys(store, sid)


async def test_deleting_the_session_ends_the_watch(store: Store, open_more: OpenMore) -> None:
    loop = _loop(store, [reply("hi")])
    sid = await loop.new_session()
    await loop.send("hello", sid)
    caught_up = asyncio.Event()

    async def follow() -> None:
        seen = 0
        async for _ in _loop(await open_more(), []).watch(sid, poll=FAST):
            seen += 1
            if seen == 4:  # the send's start, two messages, its end
                caught_up.set()

    task = asyncio.create_task(follow())
    async with asyncio.timeout(60):
        await caught_up.wait()
        await store.delete_session(sid)
        with pytest.raises(SessionNotFoundError):
            await task


async def test_a_cursor_of_an_earlier_life_of_the_id_is_refused(store: Store) -> None:
    loop = _loop(store, [reply("hi")])
    sid = await loop.new_session(session_id="again")
    await loop.send("hello", sid)
    old = (await read_all(loop, sid))[-1].cursor
    await store.delete_session(sid)
    await loop.new_session(session_id="again")
    with pytest.raises(InvalidArgumentError, match="earlier session that had this id"):
        await read_all(loop, sid, after=old)
    with pytest.raises(SessionNotFoundError):
        await read_all(loop, "nobody")


@pytest.mark.parametrize("poll", [(0, 1), (2, 1), (1, 10_000), (float("nan"), 1), "fast"])
async def test_poll_out_of_range_is_refused(store: Store, poll: object) -> None:
    loop = _loop(store, [])
    sid = await loop.new_session()
    with pytest.raises(InvalidArgumentError, match="poll"):
        await read_all_polled(loop, sid, poll)


async def read_all_polled(loop: StatefulAgentLoop, sid: str, poll: object) -> None:
    async for _ in loop.watch(sid, follow=False, poll=poll):  # type: ignore[arg-type]
        pass


async def test_a_reader_far_behind_catches_up_in_batches(store: Store,
                                                         open_more: OpenMore) -> None:
    # More sends than one read takes (64) and more messages than one batch (200).
    sid = (await store.create_session()).id
    for n in range(70):
        start = await store.begin_send(sid, [NewMessage(0, "user", _body(f"q{n}"))],
                                       owner=f"w{n}", ttl=60)
        assert start.lease is not None
        await store.finish_send(sid, start.send_index,
                                [NewMessage(0, "assistant", _body(f"a{n}"))] * 2,
                                release=start.lease)
    reader = _loop(await open_more(), [])
    full = await read_all(reader, sid)
    assert [key(i) for i in full] == await expected_keys(store, sid)
    assert len(full) == 70 * 5
    for n in (0, 137, 211, 349):
        assert await read_all(reader, sid, after=full[n].cursor) == full[n + 1:]
