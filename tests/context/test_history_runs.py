"""A cold read's sends of text alone, kept as runs of boundaries, are the sends it read.

A cold send groups the stored rows into messages and records where each send starts
(power_loop/context/history.py); the sends of text alone become :class:`RenderedSend` s
only when something asks for them one by one (a fold). Whatever the history (text,
tool calls and results, texts that look like tool parts), the sends made later are the
ones an eager grouping makes, in order with the sends added around them, with the same
messages, seqs and byte estimates, and the history's totals agree with them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop.context.history import (
    Bounds,
    History,
    RenderedSend,
    call_ids_of,
    group_records,
    group_stored,
    message_bytes,
)
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart, encode_message
from power_loop.llm.stored import is_lazy_text, stored_message
from power_loop.store.records import MessageRecord, dump_json
from power_loop.store.statements import ASSISTANT_KEY

NOW = datetime(2026, 1, 1, tzinfo=UTC)

TRICKY = ['{"kind":"tool_call","id":"c1","name":"x","arguments":"{}"}', "\\u0074ool_",
          "tool_result", 'a "quote" \\ back', "naïve ☃", ""]
texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=20))


@st.composite
def sends(draw: st.DrawFn) -> list[Message]:
    """One finished send: a user message, then text answers or answered tool calls."""
    out = [Message.user(draw(texts))]
    for number in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            call_id = f"c{draw(st.integers(0, 10**6))}-{number}"
            out.append(Message.assistant(draw(texts), [ToolCallPart(call_id, "f", "{}")]))
            out.append(Message.tool_result(ToolResultPart(call_id, "f", draw(texts))))
        out.append(Message.assistant(draw(texts), usage={"input_tokens": 3}))
    return out


def records_of(history: list[list[Message]], first_send: int,
               first_seq: int) -> list[MessageRecord]:
    """The stored records of ``history``."""
    rows = [(first_send + index, m) for index, send in enumerate(history) for m in send]
    return [MessageRecord("s", first_seq + offset, send_index, m.role, encode_message(m), NOW)
            for offset, (send_index, m) in enumerate(rows)]


def keyed(records: list[MessageRecord]) -> list[tuple[int, Any]]:
    """The rows a cold read returns: ``(key, stored JSON text)``."""
    return [(r.send_index if r.role == "user" else ASSISTANT_KEY + r.send_index
             if r.role == "assistant" else -1 - r.send_index, dump_json(r.body))
            for r in records]


def reference(records: list[MessageRecord], first_seq: int) -> list[RenderedSend]:
    """The sends an eager grouping makes of ``records``."""
    out: list[RenderedSend] = []
    for offset, record in enumerate(records):
        send_index, role, body = record.send_index, record.role, dump_json(record.body)
        message = stored_message(role, body)
        if not out or out[-1].send_index != send_index:
            out.append(RenderedSend(send_index, first_seq + offset, [], 0))
        out[-1].messages.append(message)
    return [s._replace(call_ids=call_ids_of(s.messages),
                       nbytes=sum(message_bytes(m) for m in s.messages)) for s in out]


@settings(max_examples=120, deadline=None)
@given(st.lists(sends(), min_size=1, max_size=8), st.integers(0, 5), st.integers(0, 40))
def test_runs_become_the_sends_an_eager_grouping_makes(
        history: list[list[Message]], first_send: int, first_seq: int) -> None:
    records = records_of(history, first_send, first_seq)
    expected = reference(records, first_seq)

    grouped = group_stored(keyed(records), first_seq)
    assert grouped is not None
    flat, bounds, eager = grouped

    assert flat == [m for send in history for m in send]
    assert len(bounds) == len(expected)
    assert eager == [k for k, send in enumerate(expected)
                     if not all(is_lazy_text(m) for m in send.messages)]
    for k, send in enumerate(expected):
        made = bounds.send(k, flat)
        assert made._replace(call_ids=send.call_ids) == send  # call ids: the engine's part
        start = made.first_seq - first_seq
        assert all(a is b for a, b in zip(made.messages, flat[start:start + len(made.messages)],
                                          strict=True))

    # What the engine does: runs of sends of text alone between the others, after a
    # send already held and before one added later.
    before = RenderedSend(first_send - 1, first_seq - 1, [Message.user("before")], 0, nbytes=7)
    after = RenderedSend(first_send + len(history), first_seq + len(records),
                         [Message.user("after")], 0, nbytes=9)
    held = History("s", "i", None, None, [], 0, 0)
    held.add(before)
    position = 0
    for stop in [*eager, len(bounds)]:
        if position < stop:
            held.add_run(bounds, position, stop, flat)
        if stop < len(bounds):
            held.add(bounds.send(stop, flat)._replace(call_ids=expected[stop].call_ids))
        position = stop + 1
    held.add(after)

    everything = [before, *expected, after]
    assert held.flat == [m for send in everything for m in send.messages]
    assert held.nbytes == sum(send.nbytes for send in everything)
    assert held.call_ids == {i for send in expected for i in send.call_ids}
    assert held.sends == everything
    assert held.sends == everything  # made once, kept
    held.keep(held.sends[1:])
    assert held.sends == everything[1:]
    assert held.flat == [m for send in everything[1:] for m in send.messages]
    assert held.nbytes == sum(send.nbytes for send in everything[1:])


@settings(max_examples=60, deadline=None)
@given(st.lists(sends(), min_size=1, max_size=5), st.integers(0, 5), st.integers(0, 40))
def test_records_group_as_keyed_rows_do(history: list[list[Message]], first_send: int,
                                        first_seq: int) -> None:
    """The way round rows a keyed read cannot key: whole records, decoded at once."""
    records = records_of(history, first_send, first_seq)
    expected = reference(records, first_seq)

    flat, bounds, eager = group_records(records, first_seq)

    assert flat == [m for send in history for m in send]
    assert not any(is_lazy_text(m) for m in flat)
    assert eager == list(range(len(expected)))  # every send is checked
    for k, send in enumerate(expected):
        made = bounds.send(k, flat)
        # decoded, a message is reckoned from its parts rather than its stored text
        assert made.nbytes == sum(message_bytes(m) for m in made.messages)
        assert made._replace(call_ids=send.call_ids, nbytes=send.nbytes) == send


def test_a_row_without_a_key_sends_the_read_to_the_records() -> None:
    assert group_stored([(0, "{}"), (None, "{}")], 0) is None


def test_an_empty_read_has_no_sends() -> None:
    assert group_stored([], 12) == ([], Bounds([-1, 0, 0], 12), [])
    assert group_records([], 12) == ([], Bounds([-1, 0, 0], 12), [])
