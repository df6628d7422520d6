"""Waits in the session feed: opened and decided, in commit order, with cursors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    AgentLoopConfig,
    FeedItem,
    FeedWait,
    InvalidArgumentError,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    ask_user_tool,
    call_tool,
    call_tools,
    reply,
    tool,
)
from power_loop.store.feed import Position, decode_cursor
from tests.feed.support import collect, expected_keys, key, read_all

OpenMore = Callable[..., Awaitable[Store]]
FAST = (0.01, 0.05)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@tool(requires_approval=True)
def wire(amount: int) -> str:
    """Wire money."""
    return f"wired {amount}"


def _loop(store: Store, script: list) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store,
                             tools=[wire, ask_user_tool()], config=AgentLoopConfig())


async def _waited(store: Store) -> tuple[StatefulAgentLoop, str, list[str]]:
    """Send 0 waits on two approvals (one approved, one rejected), then ends; send 1
    asks a question, answered; send 2 waits on an approval still open."""
    loop = _loop(store, [call_tools(("wire", {"amount": 5}), ("wire", {"amount": 7})),
                         reply("one of two"), call_tool("ask_user", {"question": "Who?"}),
                         reply("thanks"), call_tool("wire", {"amount": 9})])
    sid = await loop.new_session()
    first = await loop.send("pay both", sid)
    five, seven = (w.wait_id for w in first.waiting)
    await loop.approve(sid, five)
    await loop.reject(sid, seven, reason="too much")
    asked = await loop.send("pay someone", sid)
    (question,) = asked.waiting
    await loop.answer(sid, question.wait_id, "Bob")
    last = await loop.send("pay nine", sid)
    return loop, sid, [five, seven, question.wait_id, last.waiting[0].wait_id]


async def test_waits_appear_where_they_were_committed(store: Store) -> None:
    loop, sid, (five, seven, question, nine) = await _waited(store)
    assert question not in (five, seven, nine)
    items = await read_all(loop, sid)
    keys = [key(i) for i in items]
    assert keys == await expected_keys(store, sid)
    assert keys[:8] == [("send", 0, "pending"), ("message", 0, 0), ("message", 0, 1),
                        ("wait", 0, f"{five}:waiting"), ("wait", 0, f"{seven}:waiting"),
                        ("wait", 0, f"{five}:approved"), ("wait", 0, f"{seven}:rejected"),
                        ("message", 0, 2)]
    # Send 2 still waits: its call's message, then the wait, and no end yet.
    assert keys[-1] == ("wait", 2, f"{nine}:waiting")
    assert keys[-2][:2] == ("message", 2)
    waits = [i for i in items if isinstance(i, FeedWait)]
    assert [(w.kind, w.waits_for, w.tool_name, w.status, w.decision, w.decided)
            for w in waits] == [
        ("wait", "approval", "wire", "waiting", None, False),
        ("wait", "approval", "wire", "waiting", None, False),
        ("wait", "approval", "wire", "approved", None, True),
        ("wait", "approval", "wire", "rejected", "too much", True),
        ("wait", "input", "ask_user", "waiting", None, False),
        ("wait", "input", "ask_user", "answered", "Bob", True),
        ("wait", "approval", "wire", "waiting", None, False)]
    assert waits[0].arguments == '{"amount": 5}'
    assert waits[5].at >= waits[4].at
    assert len({i.cursor for i in items}) == len(items)


async def test_every_cursor_resumes_exactly_after_its_item(store: Store) -> None:
    loop, sid, _ = await _waited(store)
    items = await read_all(loop, sid)
    for at, item in enumerate(items):
        assert await read_all(loop, sid, after=item.cursor) == items[at + 1:]


async def test_a_watcher_sees_waits_opened_and_decided_by_other_stores(
        store: Store, open_more: OpenMore) -> None:
    sender = _loop(await open_more(), [call_tool("wire", {"amount": 3}), reply("done")])
    sid = await sender.new_session()
    got: list[FeedItem] = []
    opened = asyncio.Event()

    async def follow() -> None:
        watcher = _loop(await open_more(), [])
        async for item in watcher.watch(sid, poll=FAST):
            got.append(item)
            if isinstance(item, FeedWait) and not item.decided:
                opened.set()
            if key(item) == ("send", 0, "done"):
                return

    task = asyncio.create_task(follow())
    async with asyncio.timeout(60):
        waiting = await sender.send("pay", sid)
        await opened.wait()
        await _loop(await open_more(), [reply("done")]).approve(sid,
                                                               waiting.waiting[0].wait_id)
        await task
    assert [key(i) for i in got] == await expected_keys(store, sid)
    assert got == await read_all(sender, sid)


@pytest.mark.backends("postgresql")
async def test_postgresql_wakes_the_feed_on_a_decision(store: Store,
                                                       open_more: OpenMore) -> None:
    sender = _loop(await open_more(), [call_tool("wire", {"amount": 3}), reply("done")])
    sid = await sender.new_session()
    waiting = await sender.send("pay", sid)
    seen: list[FeedItem] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        # An hour between polls: only a notification can bring the decision in time.
        async for item in _loop(await open_more(), []).watch(sid, poll=(3600, 3600)):
            seen.append(item)
            if isinstance(item, FeedWait) and not item.decided:
                caught_up.set()
            if isinstance(item, FeedWait) and item.decided:
                return

    task = asyncio.create_task(follow())
    async with asyncio.timeout(60):
        await caught_up.wait()
        await _loop(await open_more(), []).approve(sid, waiting.waiting[0].wait_id,
                                                   resume=False)
        await task
    assert [key(i) for i in seen][-2:] == [
        ("wait", 0, f"{waiting.waiting[0].wait_id}:waiting"),
        ("wait", 0, f"{waiting.waiting[0].wait_id}:approved")]


def _first_format(position: Position) -> str:
    body = f"{position.messages}.{position.started}.{position.finished}.{position.tag}"
    return "f1." + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


async def test_a_first_format_cursor_sees_the_waits_after_its_place(store: Store) -> None:
    loop, sid, _ = await _waited(store)
    items = await read_all(loop, sid)
    checked = 0
    for at, item in enumerate(items):
        if isinstance(item, FeedWait):
            continue  # no cursor of the first format was ever handed out there
        # Such a cursor reads as having seen the wait events before its message
        # position: the rest is what the same place's new cursor gives, waits included.
        position = decode_cursor(item.cursor)
        rest = await read_all(loop, sid, after=_first_format(position))
        assert rest == items[at + 1:]
        checked += isinstance(items[at + 1], FeedWait) if at + 1 < len(items) else 0
    assert checked == 3  # right after each round's call: its waits come next


@given(data=st.data())
@SETTINGS
async def test_a_position_with_waits_is_accepted_exactly_when_handed_out(
        store: Store, data: st.DataObject) -> None:
    loop, sid, _ = await _waited(store)
    full = await read_all(loop, sid)
    tag = decode_cursor(full[0].cursor).tag
    handed_out = [Position(0, 0, 0, tag).encode(), *(item.cursor for item in full)]
    real = decode_cursor(data.draw(st.sampled_from(handed_out)))
    step = st.sampled_from([0, 0, -1, 1, 2])
    position = Position(max(real.messages + data.draw(step), 0),
                        max(real.started + data.draw(step), 0),
                        max(real.finished + data.draw(step), 0), tag,
                        max(real.waits + data.draw(step), 0))
    cursor = position.encode()
    event("accepted" if cursor in handed_out else "refused")
    if cursor in handed_out:
        assert await read_all(loop, sid, after=cursor) == full[handed_out.index(cursor):]
    else:
        with pytest.raises(InvalidArgumentError):
            await read_all(loop, sid, after=cursor)


async def test_a_reader_far_behind_catches_up_in_order(store: Store) -> None:
    loop, sid, _ = await _waited(store)
    items = await read_all(loop, sid)
    one_by_one: list[FeedItem] = []
    cursor: str | None = None
    while True:
        batch = await collect(loop.watch(sid, after=cursor, follow=False))
        if not batch:
            break
        one_by_one.append(batch[0])
        cursor = batch[0].cursor
    assert one_by_one == items
