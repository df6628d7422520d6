"""Sends: open, finish, read back; one at a time; idempotent by request key."""

from __future__ import annotations

import math
from datetime import UTC

import pytest

from conformance.probes import count_rows
from conformance.samples import message
from power_loop import (
    InvalidArgumentError,
    NewMessage,
    SendNotFoundError,
    SendPendingError,
    SessionError,
    SessionNotFoundError,
    Store,
)

FINAL_STATUSES = ["done", "failed", "cancelled", "aborted"]


async def test_start_send_opens_a_pending_send_with_its_messages(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [message("a"), message("b")])

    send = await store.start_send("s", [NewMessage(99, "user", {"text": "hi"})])

    assert (send.session_id, send.send_index, send.status, send.source) == (
        "s", 0, "pending", "user")
    assert (send.request_key, send.first_seq, send.rounds, dict(send.usage)) == (None, 2, 0, {})
    assert (send.finished_at, send.stop_reason, send.error) == (None, None, None)
    assert send.created_at.tzinfo == UTC
    [stored] = await store.read_messages("s", from_seq=2)
    assert (stored.seq, stored.send_index, stored.body) == (2, 0, {"text": "hi"})
    session = await store.get_session("s")
    assert (session.pending_send, session.send_count, session.next_seq) == (0, 1, 3)
    assert await store.get_send("s", 0) == send
    assert await store.list_sends("s") == [send]


async def test_finish_send_records_outcome_and_last_messages(store: Store) -> None:
    await store.create_session("s")
    send = await store.start_send("s", [message("q")], source="timer")

    done = await store.finish_send(
        "s", send.send_index,
        [NewMessage(5, "assistant", {"text": "a"}), NewMessage(5, "tool", {"text": "t"})],
        stop_reason="end_turn", rounds=2, usage={"input_tokens": 10, "output_tokens": 3})

    assert (done.status, done.stop_reason, done.rounds, done.source) == (
        "done", "end_turn", 2, "timer")
    assert done.usage == {"input_tokens": 10, "output_tokens": 3}
    assert done.error is None
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert (done.created_at, done.first_seq) == (send.created_at, send.first_seq)
    records = await store.read_messages("s")
    assert [(m.seq, m.send_index, m.role) for m in records] == [
        (0, 0, "user"), (1, 0, "assistant"), (2, 0, "tool")]
    session = await store.get_session("s")
    assert (session.pending_send, session.send_count, session.next_seq) == (None, 1, 3)
    assert await store.get_send("s", 0) == done


@pytest.mark.parametrize("status", FINAL_STATUSES)
async def test_every_final_status_is_stored(store: Store, status: str) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])

    finished = await store.finish_send("s", 0, status=status)

    assert finished.status == status
    assert (await store.get_send("s", 0)).status == status
    assert (await store.get_session("s")).pending_send is None


@pytest.mark.parametrize("status", ["pending", "running", "DONE", "", "done "])
async def test_non_final_status_is_rejected(store: Store, status: str) -> None:
    await store.create_session("s")
    send = await store.start_send("s", [message("q")])

    with pytest.raises(InvalidArgumentError) as info:
        await store.finish_send("s", 0, [message("a", role="assistant")], status=status)

    assert info.value.code == "invalid_argument"
    assert await store.get_send("s", 0) == send
    assert await store.next_seq("s") == 1


async def test_a_pending_send_blocks_the_next_one(store: Store) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q1")], request_key="k1")

    with pytest.raises(SendPendingError) as info:
        await store.start_send("s", [message("q2")], request_key="k2")

    assert info.value.code == "send_pending"
    assert (info.value.session_id, info.value.send_index) == ("s", 0)
    session = await store.get_session("s")
    assert (session.send_count, session.next_seq, session.pending_send) == (1, 1, 0)
    assert await count_rows(store, "sends") == 1
    await store.finish_send("s", 0)
    second = await store.start_send("s", [message("q2")], request_key="k2")
    assert (second.send_index, second.first_seq) == (1, 1)


async def test_request_key_makes_start_send_idempotent(store: Store) -> None:
    await store.create_session("s")
    first = await store.start_send("s", [message("q")], request_key="key-1")

    again = await store.start_send("s", [message("other"), message("more")],
                                   request_key="key-1")

    assert again == first
    assert await store.next_seq("s") == 1
    finished = await store.finish_send("s", first.send_index, [message("a", role="assistant")])
    after_finish = await store.start_send("s", [message("q")], request_key="key-1")
    assert after_finish == finished
    assert [m.body["text"] for m in await store.read_messages("s")] == ["q", "a"]
    session = await store.get_session("s")
    assert (session.send_count, session.pending_send, session.next_seq) == (1, None, 2)
    fresh = await store.start_send("s", [message("q2")], request_key="key-2")
    assert (fresh.send_index, fresh.request_key) == (1, "key-2")


async def test_request_keys_are_scoped_to_their_session(store: Store) -> None:
    for sid in ("s1", "s2"):
        await store.create_session(sid)

    one = await store.start_send("s1", [message("q")], request_key="shared")
    two = await store.start_send("s2", [message("q")], request_key="shared")

    assert (one.session_id, two.session_id) == ("s1", "s2")
    assert await count_rows(store, "sends") == 2


async def test_sends_without_request_key_do_not_collide(store: Store) -> None:
    await store.create_session("s")
    for index in range(3):
        send = await store.start_send("s", [message(f"q{index}")])
        await store.finish_send("s", send.send_index)

    sends = await store.list_sends("s")

    assert [(s.send_index, s.request_key, s.first_seq) for s in sends] == [
        (0, None, 0), (1, None, 1), (2, None, 2)]


async def test_usage_and_error_json_round_trip(store: Store) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])
    usage = {"input_tokens": 2**53, "cost_usd": 0.000123, "cache": {"hit": True, "miss": None},
             "per_round": [1, 2.5, -3], "modèle": "gpt-😀", "note": "a\x00b"}
    error = {"type": "ProviderError", "status": 529, "message": "overloaded \u202e\x00",
             "details": {"retry": None, "tries": [1, 2]}, "fatal": False}

    finished = await store.finish_send("s", 0, status="failed", usage=usage, error=error)

    assert (finished.usage, finished.error) == (usage, error)
    again = await store.get_send("s", 0)
    assert (again.usage, again.error) == (usage, error)
    assert list(again.usage) == list(usage)


async def test_finish_send_on_a_non_pending_index_raises(store: Store) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])

    with pytest.raises(InvalidArgumentError) as wrong_index:
        await store.finish_send("s", 1, [message("a", role="assistant")])
    done = await store.finish_send("s", 0)
    with pytest.raises(InvalidArgumentError) as twice:
        await store.finish_send("s", 0, [message("again", role="assistant")], status="failed")

    assert wrong_index.value.code == twice.value.code == "invalid_argument"
    assert await store.get_send("s", 0) == done
    assert await store.next_seq("s") == 1
    assert (await store.get_session("s")).pending_send is None


async def test_failing_finish_writes_nothing(store: Store) -> None:
    await store.create_session("s")
    send = await store.start_send("s", [message("q")])
    before = await store.get_session("s")

    with pytest.raises(InvalidArgumentError) as info:
        await store.finish_send("s", 0, [message("a", role="assistant")],
                                usage={"cost": math.nan})

    assert info.value.code == "invalid_argument"
    assert await store.get_send("s", 0) == send
    assert await store.get_session("s") == before
    assert await count_rows(store, "messages") == 1


@pytest.mark.parametrize("field", ["source", "stop_reason"])
async def test_tokens_are_validated(store: Store, field: str) -> None:
    await store.create_session("s")
    if field == "source":
        refused = store.start_send("s", [message("q")], source="Not A Token")
    else:
        await store.start_send("s", [message("q")])
        refused = store.finish_send("s", 0, stop_reason="end turn")
    with pytest.raises(InvalidArgumentError) as info:
        await refused

    assert info.value.code == "invalid_argument"
    assert await count_rows(store, "messages") == (1 if field == "stop_reason" else 0)


async def test_list_sends_from_index_and_get_send_of_unknown_index(store: Store) -> None:
    await store.create_session("s")
    for index in range(4):
        await store.start_send("s", [message(f"q{index}")])
        await store.finish_send("s", index)

    assert [s.send_index for s in await store.list_sends("s", from_index=2)] == [2, 3]
    assert await store.list_sends("s", from_index=4) == []
    for missing in (4, 2**62 - 1):
        with pytest.raises(SendNotFoundError) as info:
            await store.get_send("s", missing)
        assert info.value.code == "send_not_found"
        assert (info.value.session_id, info.value.send_index) == ("s", missing)
        assert isinstance(info.value, SessionError)
        assert not isinstance(info.value, SessionNotFoundError)


async def test_a_session_without_sends_lists_none(store: Store) -> None:
    await store.create_session("s")

    assert await store.list_sends("s") == []
    assert await store.read_messages("s") == []
    with pytest.raises(SendNotFoundError) as info:
        await store.get_send("s", 0)
    assert info.value.send_index == 0
