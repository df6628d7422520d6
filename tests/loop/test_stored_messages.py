"""Stored text-only messages are decoded when first read, and are the same messages.

A cold send reads the session's bodies and decodes a user or assistant message of text
alone only when something reads its parts (power_loop/llm/stored.py). Whatever the text
holds (JSON that looks like a tool call, escapes, quotes, any Unicode), the message is
equal to the eagerly decoded one, and a cold loop builds the same request bytes as a
warm one.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import (
    HistoryInvariantError,
    InvalidArgumentError,
    LLMRequest,
    NewMessage,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
)
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart, encode_message
from power_loop.llm.stored import is_lazy_text, stored_message
from power_loop.store.records import dump_json

StoreOpener = Callable[..., Awaitable[Store]]

# Texts that look like what the laziness test looks for, or like JSON of a tool part.
TRICKY = ['{"kind":"tool_call","id":"c1","name":"x","arguments":"{}"}',
          '\\u0074ool_call', "tool_result", 'say "hi" \\ back', "naïve ☃ 🎉", "",
          "\u2028line\u2029", '"}],"meta":{"x":1}}']

texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=40))
metas = st.dictionaries(st.sampled_from(["usage", "stop_reason", "model", "x"]),
                        st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=8)), max_size=2)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """Any message the codec stores: text-only ones above all, some with tool parts."""
    shape = draw(st.sampled_from(["user", "assistant", "calls", "result"]))
    meta: dict[str, Any] = draw(metas)
    if shape == "user":
        return Message.user(draw(texts), **meta)
    if shape == "assistant":
        return Message.assistant(draw(texts), **meta)
    if shape == "calls":
        call = ToolCallPart(draw(texts) or "c", "add", draw(texts))
        return Message.assistant(draw(texts), [call], **meta)
    return Message.tool_result(ToolResultPart("c", "add", draw(texts), draw(st.booleans())))


@settings(max_examples=150, deadline=None)
@given(messages())
def test_a_stored_message_is_the_message_it_stores(message: Message) -> None:
    stored = stored_message(message.role, dump_json(encode_message(message)))

    assert stored == message and message == stored
    assert hash(stored) == hash(message)
    assert (stored.role, stored.parts, dict(stored.meta)) == (message.role, message.parts,
                                                             dict(message.meta))
    assert repr(stored) == repr(message)
    assert copy.copy(stored) == message and type(copy.copy(stored)) is Message
    if message.role == "tool" or any(p.kind != "text" for p in message.parts):
        assert not is_lazy_text(stored)  # decoded now: the pairing rules see it


def test_a_lazy_body_that_does_not_decode_raises_where_it_is_read() -> None:
    stored = stored_message("user", dump_json({"v": 2, "parts": [], "meta": {}}))

    assert stored.role == "user"
    with pytest.raises(InvalidArgumentError, match="codec version 2"):
        _ = stored.parts


def _history() -> list[NewMessage]:
    rows: list[NewMessage] = []
    for index, text in enumerate(TRICKY):
        rows.append(NewMessage(index, "user", encode_message(Message.user(text))))
        rows.append(NewMessage(index, "assistant", encode_message(
            Message.assistant(f"answer to {text}", stop_reason="end_turn"))))
    call = ToolCallPart("call-1", "add", '{"a": 1}')
    send = len(TRICKY)
    rows += [NewMessage(send, "user", encode_message(Message.user("add"))),
             NewMessage(send, "assistant", encode_message(Message.assistant("", [call]))),
             NewMessage(send, "tool", encode_message(Message.tool_result(
                 ToolResultPart("call-1", "add", "2")))),
             NewMessage(send, "assistant", encode_message(Message.assistant("2")))]
    return rows


def reader(request: LLMRequest) -> str:
    """Reads every message (as a provider converting the request does)."""
    return f"{sum(len(m.text) for m in request.messages)} characters"


async def test_a_cold_loop_sends_the_bytes_a_warm_loop_sends(
        store: Store, open_more: StoreOpener) -> None:
    cold_store = await open_more(cache_bytes=0)
    sids = [(await store.create_session()).id for _ in range(2)]
    for sid in sids:
        await store.append_messages(sid, _history())
    warm_llm, cold_llm = ScriptedLLM(reader), ScriptedLLM(reader)
    warm = StatefulAgentLoop(llm=warm_llm, store=store)
    await warm.prewarm(sids[0])
    cold = StatefulAgentLoop(llm=cold_llm, store=cold_store)

    for text in ("first", "second"):
        await warm.send(text, session_id=sids[0])
        await cold.send(text, session_id=sids[1])

    assert [r.canonical_bytes() for r in cold_llm.requests] == \
        [r.canonical_bytes() for r in warm_llm.requests]
    assert cold_llm.requests[0].messages[:-1] == tuple(
        m for m in warm_llm.requests[0].messages[:-1])


async def test_a_tool_call_hidden_in_a_history_is_still_checked(store: Store) -> None:
    """A reused call id in a stored assistant message is found on a cold send: the
    message is decoded at once, not lazily."""
    sid = (await store.create_session()).id
    await store.append_messages(sid, _history())
    again = ToolCallPart("call-1", "add", "{}")
    late = len(TRICKY) + 1
    await store.append_messages(sid, [
        NewMessage(late, "user", encode_message(Message.user("again"))),
        NewMessage(late, "assistant", encode_message(Message.assistant("", [again]))),
        NewMessage(late, "tool", encode_message(Message.tool_result(
            ToolResultPart("call-1", "add", "0")))),
        NewMessage(late, "assistant", encode_message(Message.assistant("0")))])
    llm = ScriptedLLM(reader)
    loop = StatefulAgentLoop(llm=llm, store=store)
    with pytest.raises(HistoryInvariantError, match="used twice"):
        await loop.send("hello", session_id=sid)
    assert llm.requests == []


async def _rewrite(store: Store, sid: str, assign: str, where: str) -> None:
    """Rewrite stored messages with SQL (as something other than power_loop might)."""
    dialect = store._database.dialect
    table = dialect.quote(f"{store.table_prefix}messages")
    async with store._database.transaction() as conn:
        await conn.execute(dialect.render(
            f"UPDATE {table} SET {assign} WHERE session_id = ? AND {where}"), [sid])


async def test_rows_the_cold_read_cannot_key_are_read_whole(
        store: Store, open_more: StoreOpener) -> None:
    """A send index past 2**62 (power_loop writes none) is read as whole records: the
    request has the same bytes; a role power_loop does not know stops the send."""
    cold_store = await open_more(cache_bytes=0)
    plain, huge, odd = [(await store.create_session()).id for _ in range(3)]
    for sid in (plain, huge, odd):
        await store.append_messages(sid, _history())
    last = len(TRICKY)
    await _rewrite(store, huge, f"send_index = send_index + {2**62 + 5}",
                   f"send_index = {last}")
    await _rewrite(store, odd, "role = 'system'", "seq = 1")
    llm = ScriptedLLM(reader)
    cold = StatefulAgentLoop(llm=llm, store=cold_store)

    await cold.send("first", session_id=plain)
    await cold.send("first", session_id=huge)
    with pytest.raises(InvalidArgumentError, match="unknown message role 'system'"):
        await cold.send("first", session_id=odd)

    assert len(llm.requests) == 2
    assert llm.requests[0].canonical_bytes() == llm.requests[1].canonical_bytes()
