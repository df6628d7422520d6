"""Hostile cursors: whatever a client sends back, a typed error or the exact rest."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    AgentLoopConfig,
    FeedItem,
    InvalidArgumentError,
    NewMessage,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    call_tool,
    reply,
    tool,
)
from power_loop.llm.messages import Message, encode_message
from power_loop.store.feed import Position, decode_cursor, identity_tag
from tests.feed.support import read_all

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def _session(store: Store) -> tuple[StatefulAgentLoop, str, str, list[FeedItem]]:
    """Two finished sends and a third still open; and a second session."""
    loop = StatefulAgentLoop(llm=ScriptedLLM([call_tool("add", {"a": 1, "b": 1}), reply("2"),
                                              reply("ok"), reply("other")]),
                             store=store, tools=[add], config=AgentLoopConfig())
    sid = await loop.new_session()
    await loop.send("1 + 1?", sid)
    await loop.send("fine", sid)
    body = encode_message(Message.user("open"))
    await store.begin_send(sid, [NewMessage(0, "user", body)], owner="w", ttl=60)
    other = await loop.new_session()
    await loop.send("elsewhere", other)
    return loop, sid, other, await read_all(loop, sid)


async def _refused(loop: StatefulAgentLoop, sid: str, cursor: Any) -> bool:
    try:
        await read_all(loop, sid, after=cursor)
    except InvalidArgumentError:
        return True
    return False


def _raw(text: str) -> str:
    return "f1." + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


garbage = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="abcdefABCDEF0123456789-_.=", max_size=250).map(lambda t: "f1." + t),
    st.from_regex(r"\d{0,25}\.\d{0,25}\.\d{0,25}\.[0-9a-g]{0,18}", fullmatch=True).map(_raw),
    st.integers(), st.binary(max_size=40), st.lists(st.integers(), max_size=3),
    st.floats(allow_nan=True), st.just(b"f1.MC4wLjAuMDAwMDAwMDAwMDAwMDAwMA"),
)


@given(data=st.data())
@SETTINGS
async def test_garbage_is_refused_with_a_typed_error(store: Store, data: st.DataObject) -> None:
    loop, sid, _, _ = await _session(store)
    cursor = data.draw(garbage, "cursor")
    assert await _refused(loop, sid, cursor)


@given(data=st.data())
@SETTINGS
async def test_a_position_is_accepted_exactly_when_the_feed_handed_it_out(
        store: Store, data: st.DataObject) -> None:
    loop, sid, other, full = await _session(store)
    mine = decode_cursor(full[0].cursor).tag
    theirs = decode_cursor((await read_all(loop, other))[0].cursor).tag
    number = st.one_of(st.integers(0, 12), st.integers(0, 2**62 - 1),
                       st.integers(2**62, 10**19 - 1))
    tag = data.draw(st.sampled_from([mine, mine, theirs, identity_tag(sid, "earlier")]))
    handed_out = [Position(0, 0, 0, mine).encode(), *(item.cursor for item in full)]
    if data.draw(st.booleans(), "near a real one"):  # one step off a real position, or on it
        real = decode_cursor(data.draw(st.sampled_from(handed_out)))
        step = st.sampled_from([0, 0, 0, -1, 1])
        position = Position(max(real.messages + data.draw(step), 0),
                            max(real.started + data.draw(step), 0),
                            max(real.finished + data.draw(step), 0), tag)
    else:
        position = Position(data.draw(number, "messages"), data.draw(number, "started"),
                            data.draw(number, "finished"), tag)
    cursor = position.encode()
    event("accepted" if cursor in handed_out else "refused")
    if cursor in handed_out:
        at = handed_out.index(cursor)
        assert await read_all(loop, sid, after=cursor) == full[at:]
    else:
        assert await _refused(loop, sid, cursor)
    # The other session's cursors are never this session's.
    assert await _refused(loop, other, full[-1].cursor)
