"""What a send costs the database: round trips, statements and write transactions.

Counted on the driver's trace (``bench/statements.py`` hooks asyncpg and aiomysql below
power_loop, and SQLite's trace callback), so ``BEGIN``/``COMMIT`` and anything a pool
sends on its own count too. These are the design's figures, not timings:

* SQLite runs statements inline on the event loop's thread: a write transaction is
  ``BEGIN IMMEDIATE``, the session-row update, its inserts and updates, ``COMMIT``;
* PostgreSQL folds each write transaction into one statement (a data-modifying ``WITH``);
* MySQL sends each write transaction as one ``BEGIN; ...; COMMIT`` text.

The durable contract needs two commits per no-tool send (the user's message before the
model call, the answer after it) and one more per mid-send write (the tool call before
the tool runs, its result after).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.statements import Trace, trace_statements, transactions
from power_loop import (
    InvalidArgumentError,
    LeaseLostError,
    LLMRequest,
    Message,
    NewMessage,
    ProjectedRepresentation,
    ScriptedLLM,
    SessionBusyError,
    Store,
    Turn,
    call_tool,
    reply,
    tool,
)
from power_loop.llm.messages import encode_message
from tests.loop.support import make_loop, stored_state


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return key


def answer(request: LLMRequest) -> Turn:
    return reply("ok")


def one_tool(request: LLMRequest) -> Turn:
    if request.messages[-1].role == "user":
        return call_tool("lookup", {"key": "k"})
    return reply("ok")


# backend -> (round trips, statements) per send of each workload
EXPECTED = {
    "sqlite": {"no_tool": (10, 10), "one_tool": (18, 18)},
    "postgresql": {"no_tool": (2, 2), "one_tool": (4, 4)},
    "mysql": {"no_tool": (2, 14), "one_tool": (4, 26)},
}
WRITE_TXNS = {"no_tool": 2, "one_tool": 4}


def statements(trace: Trace) -> int:
    return sum(len(name.split("+")) for _, name in trace)


async def traced_sends(store: Store, workload: str, sends: int,
                       **config: Any) -> tuple[Trace, str]:
    """``sends`` warm sends of ``workload`` (one untimed send first), traced."""
    llm = ScriptedLLM(answer if workload == "no_tool" else one_tool)
    loop = make_loop(store, llm, [lookup] if workload == "one_tool" else [], **config)
    sid = await loop.new_session()
    await loop.send("warm up", sid)
    with trace_statements() as trace:
        for i in range(sends):
            result = await loop.send(f"question {i}", sid)
            assert result.final_text == "ok"
    return trace, sid


@pytest.mark.parametrize("workload", ["no_tool", "one_tool"])
async def test_a_send_costs_its_commits_and_no_more(store: Store, backend: str,
                                                    workload: str) -> None:
    sends = 3
    trace, sid = await traced_sends(store, workload, sends)
    round_trips, stmts = EXPECTED[backend][workload]
    assert len(trace) == round_trips * sends, trace
    assert statements(trace) == stmts * sends, trace
    txns = transactions(trace)
    assert (txns.writing, txns.reading) == (WRITE_TXNS[workload] * sends, 0), trace
    per_send = 2 if workload == "no_tool" else 4
    assert [(seq, index) for seq, index, _, _ in await stored_state(store, sid)] == [
        (seq, seq // per_send) for seq in range(per_send * (sends + 1))]


async def test_projections_ride_in_the_final_write(store: Store, backend: str) -> None:
    trace, sid = await traced_sends(store, "no_tool", 2,
                                    representation=ProjectedRepresentation())
    # SQLite writes the projection with a statement of its own inside the transaction.
    round_trips = {"sqlite": 11, "postgresql": 2, "mysql": 2}[backend]
    assert len(trace) == round_trips * 2, trace
    assert transactions(trace).writing == 4
    projections = await store.read_projections(sid, 0, 3)
    assert sorted(projections) == [0, 1, 2]


def user_message(text: str) -> list[NewMessage]:
    return [NewMessage(0, "user", encode_message(Message.user(text)))]


async def test_a_stale_one_trip_write_changes_nothing(store: Store) -> None:
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, user_message("hi"), owner="first", ttl=30)
    assert start.lease is not None
    assert await store.release_lease(start.lease)
    newer = await store.acquire_lease(sid, "second", ttl=30)
    assert newer.epoch > start.lease.epoch
    before = await stored_state(store, sid)
    answer = [NewMessage(start.send_index, "assistant",
                         encode_message(Message.assistant("late")))]
    with pytest.raises(LeaseLostError):
        await store.append_messages(sid, answer, epoch=start.lease.epoch, extend_lease=30)
    with pytest.raises(LeaseLostError):
        await store.close_send(sid, start.send_index, answer, lease=start.lease,
                               status="done", stop_reason="end_turn", rounds=1, usage={},
                               projections=[(start.send_index, 1, {"text": "late"})])
    assert await stored_state(store, sid) == before
    assert (await store.get_session(sid)).pending_send == start.send_index
    assert (await store.get_send(sid, start.send_index)).status == "pending"
    assert await store.read_projections(sid, 0, 10) == {}


async def test_closing_a_send_that_is_not_pending_is_refused(store: Store) -> None:
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, user_message("hi"), owner="first", ttl=30)
    assert start.lease is not None
    with pytest.raises(InvalidArgumentError):
        await store.close_send(sid, start.send_index + 1, [], lease=start.lease,
                               status="done", stop_reason="end_turn", rounds=0, usage={})
    first = await store.close_send(
        sid, start.send_index,
        [NewMessage(start.send_index, "assistant", encode_message(Message.assistant("ok")))],
        lease=start.lease, status="done", stop_reason="end_turn", rounds=1,
        usage={"input_tokens": 3}, projections=[(start.send_index, 2, {"p": 1})])
    assert first == 1
    send = await store.get_send(sid, start.send_index)
    assert (send.status, send.rounds, send.usage) == ("done", 1, {"input_tokens": 3})
    assert await store.read_projections(sid, 0, 10) == {0: (2, {"p": 1})}
    session = await store.get_session(sid)
    assert (session.pending_send, session.lease_owner, session.next_seq) == (None, None, 2)


async def test_a_request_key_opens_one_send(store: Store) -> None:
    sid = (await store.create_session()).id
    start = await store.begin_send(sid, user_message("hi"), owner="first", ttl=30,
                                   request_key="key-1")
    assert start.lease is not None and start.existing is None
    again = await store.begin_send(sid, user_message("hi"), owner="second", ttl=30,
                                   request_key="key-1")
    assert again.lease is None and again.existing is not None
    assert (again.send_index, again.first_seq) == (start.send_index, start.first_seq)
    with pytest.raises(SessionBusyError):
        await store.begin_send(sid, user_message("other"), owner="third", ttl=30,
                               request_key="key-2")
    assert [seq for seq, _, _, _ in await stored_state(store, sid)] == [0]


async def test_one_trip_writes_carry_many_messages_and_projections(store: Store) -> None:
    sid = (await store.create_session()).id
    users = [*user_message("a"), *user_message("b")]
    start = await store.begin_send(sid, users, owner="first", ttl=30)
    assert start.lease is not None
    index = start.send_index
    notes = [NewMessage(index, "assistant", {"n": i}) for i in range(3)]
    assert await store.append_messages(sid, notes, epoch=start.lease.epoch,
                                       extend_lease=30) == [2, 3, 4]
    assert await store.append_messages(sid, [NewMessage(index, "tool", {"n": 9})]) == [5]
    ends = [NewMessage(index, "assistant", {"end": i}) for i in range(2)]
    first = await store.close_send(sid, index, ends, lease=start.lease, status="done",
                                   stop_reason="end_turn", rounds=2, usage={},
                                   projections=[(0, 1, {"p": 0}), (1, 1, {"p": 1}),
                                                (index, 3, {"p": "x"})])
    assert first == 6
    assert [(seq, role, body) for seq, _, role, body in await stored_state(store, sid)][2:] \
        == [(2, "assistant", {"n": 0}), (3, "assistant", {"n": 1}),
            (4, "assistant", {"n": 2}), (5, "tool", {"n": 9}),
            (6, "assistant", {"end": 0}), (7, "assistant", {"end": 1})]
    assert await store.read_projections(sid, 0, 5) == {0: (3, {"p": "x"}), 1: (1, {"p": 1})}
