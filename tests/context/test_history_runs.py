"""A cold read's sends of text alone, kept as runs of boundaries, are the sends it read.

A cold send groups the stored rows into messages and records where each send starts
(power_loop/context/history.py); the sends of text alone become :class:`RenderedSend` s
only when something asks for them one by one (a fold). Whatever the history (text,
tool calls and results, texts that look like tool parts), the sends made later are the
ones an eager grouping makes, in order with the sends added around them, with the same
messages, seqs and byte estimates, and the history's totals agree with them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop.context.history import (
    History,
    RenderedSend,
    call_ids_of,
    group_stored,
    message_bytes,
)
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart, encode_message
from power_loop.llm.stored import is_lazy_text, stored_message
from power_loop.store.records import dump_json

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


def rows_of(history: list[list[Message]], first_send: int) -> list[tuple[int, str, Any]]:
    """The rows a cold read returns: ``(send_index, role, stored JSON text)``."""
    return [(first_send + index, m.role, dump_json(encode_message(m)))
            for index, send in enumerate(history) for m in send]


def reference(rows: list[tuple[int, str, Any]], first_seq: int) -> list[RenderedSend]:
    """The sends an eager grouping makes of ``rows``."""
    out: list[RenderedSend] = []
    for offset, (send_index, role, body) in enumerate(rows):
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
    rows = rows_of(history, first_send)
    expected = reference(rows, first_seq)

    flat, bounds, eager = group_stored(rows, first_seq)

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
    after = RenderedSend(first_send + len(history), first_seq + len(rows),
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


def test_an_empty_read_has_no_sends() -> None:
    flat, bounds, eager = group_stored([], 12)

    assert (flat, len(bounds), eager) == ([], 0, [])
