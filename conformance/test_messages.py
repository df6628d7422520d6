"""Messages: seqs from 0 without gaps, keyset reads, atomic appends, isolation."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import pytest

from conformance.probes import count_rows
from conformance.samples import message
from power_loop import InvalidArgumentError, NewMessage, Store


async def test_seqs_start_at_zero_and_stay_contiguous(store: Store) -> None:
    await store.create_session("s")

    first = await store.append_messages("s", [message("a")])
    second = await store.append_messages("s", [message("b"), message("c"), message("d")])
    third = await store.append_messages("s", [message("e"), message("f")])

    assert (first, second, third) == ([0], [1, 2, 3], [4, 5])
    records = await store.read_messages("s")
    assert [m.seq for m in records] == list(range(6))
    assert [m.body["text"] for m in records] == list("abcdef")
    assert {m.session_id for m in records} == {"s"}
    assert await store.next_seq("s") == 6 == (await store.get_session("s")).next_seq


async def test_sends_and_plain_appends_share_one_sequence(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [message("note", role="system")])
    send = await store.start_send("s", [message("q1"), message("q2")])
    await store.finish_send("s", send.send_index, [message("a", role="assistant")])
    await store.append_messages("s", [message("after")])

    records = await store.read_messages("s")

    assert send.first_seq == 1
    assert [m.seq for m in records] == [0, 1, 2, 3, 4]
    assert [m.send_index for m in records] == [0, 0, 0, 0, 0]
    assert [m.role for m in records] == ["system", "user", "user", "assistant", "user"]


async def test_role_and_send_index_round_trip(store: Store) -> None:
    await store.create_session("s")
    sent = [NewMessage(3, "tool", {"text": "x"}), NewMessage(0, "assistant", {}),
            NewMessage(7, "tool_result", {"n": 1})]

    await store.append_messages("s", sent)

    got = [(m.send_index, m.role, dict(m.body)) for m in await store.read_messages("s")]
    assert got == [(m.send_index, m.role, dict(m.body)) for m in sent]


async def test_empty_append_writes_nothing(store: Store) -> None:
    await store.create_session("s")

    assert await store.append_messages("s", []) == []
    assert await store.next_seq("s") == 0


async def test_keyset_reads_page_through_in_order(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [message(str(i)) for i in range(20)])

    pages = [await store.read_messages("s", limit=7)]
    while pages[-1]:
        pages.append(await store.read_messages("s", from_seq=pages[-1][-1].seq + 1, limit=7))

    assert [len(p) for p in pages] == [7, 7, 6, 0]
    assert [m.body["text"] for p in pages for m in p] == [str(i) for i in range(20)]
    assert [m.seq for m in await store.read_messages("s", from_seq=15)] == [15, 16, 17, 18, 19]
    assert await store.read_messages("s", from_seq=20) == []
    assert await store.read_messages("s", from_seq=3, limit=0) == []


# Wrong types on purpose (what an untyped caller may pass): hence the type: ignores.
_BAD_READS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "limit_negative": lambda s: s.read_messages("s", limit=-1),
    "limit_huge": lambda s: s.read_messages("s", limit=2**62),
    "limit_float": lambda s: s.read_messages("s", limit=1.5),  # type: ignore[arg-type]
    "limit_bool": lambda s: s.read_messages("s", limit=True),
    "from_seq_negative": lambda s: s.read_messages("s", from_seq=-1),
    "from_seq_huge": lambda s: s.read_messages("s", from_seq=2**62),
    "from_seq_none": lambda s: s.read_messages("s", from_seq=None),  # type: ignore[arg-type]
    "from_index_negative": lambda s: s.list_sends("s", from_index=-1),
    "from_index_huge": lambda s: s.list_sends("s", from_index=2**62),
    "send_index_negative": lambda s: s.get_send("s", -1),
    "send_index_str": lambda s: s.get_send("s", "0"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(_BAD_READS))
async def test_read_bounds_out_of_range_are_rejected(store: Store, case: str) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("a")])

    with pytest.raises(InvalidArgumentError) as info:
        await _BAD_READS[case](store)

    assert info.value.code == "invalid_argument"


async def test_largest_read_bounds_are_accepted(store: Store) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("a")])
    largest = 2**62 - 1

    assert [m.seq for m in await store.read_messages("s", limit=largest)] == [0]
    assert await store.read_messages("s", from_seq=largest) == []
    assert await store.read_messages("s", from_seq=largest, limit=largest) == []
    assert await store.list_sends("s", from_index=largest) == []


async def test_next_seq_changes_on_every_append(store: Store) -> None:
    await store.create_session("s")
    tokens = [await store.next_seq("s")]
    appends: list[Callable[[], Awaitable[object]]] = [
        lambda: store.append_messages("s", [message("a")]),
        lambda: store.append_messages("s", [message("b"), message("c")]),
        lambda: store.start_send("s", [message("d")]),
        lambda: store.finish_send("s", 0, [message("e", role="assistant")]),
        lambda: store.append_messages("s", [message("f")]),
    ]
    for append in appends:
        await append()
        tokens.append(await store.next_seq("s"))

    assert tokens == [0, 1, 3, 4, 5, 6]


_BAD_MESSAGES = {
    "role_uppercase": NewMessage(0, "User", {"text": "x"}),
    "role_empty": NewMessage(0, "", {"text": "x"}),
    "role_with_space": NewMessage(0, "tool call", {"text": "x"}),
    "role_sql": NewMessage(0, "user'; --", {"text": "x"}),
    "body_object": NewMessage(0, "user", {"text": object()}),
    "body_set": NewMessage(0, "user", {"ids": {1, 2}}),
    "body_bytes": NewMessage(0, "user", {"raw": b"\x00\x01"}),
    "body_nan": NewMessage(0, "user", {"score": math.nan}),
    "body_infinity": NewMessage(0, "user", {"score": -math.inf}),
}


@pytest.mark.parametrize("bad", sorted(_BAD_MESSAGES))
@pytest.mark.parametrize("position", ["alone", "last_of_three"])
async def test_failing_append_writes_nothing(store: Store, bad: str, position: str) -> None:
    await store.create_session("s")
    await store.append_messages("s", [message("kept")])
    batch = [_BAD_MESSAGES[bad]]
    if position == "last_of_three":
        batch = [message("ok-1"), message("ok-2"), *batch]

    with pytest.raises(InvalidArgumentError) as info:
        await store.append_messages("s", batch)

    assert info.value.code == "invalid_argument"
    assert await store.next_seq("s") == 1
    assert [m.body["text"] for m in await store.read_messages("s")] == ["kept"]
    assert await count_rows(store, "messages") == 1
    assert await store.append_messages("s", [message("next")]) == [1]


async def test_reads_never_cross_sessions(store: Store) -> None:
    # Ids that a LIKE, a prefix match or a case-folding comparison would confuse.
    ids = ["a", "ab", "a%", "a_", "A", "a "]
    for n, sid in enumerate(ids):
        await store.create_session(sid)
        await store.append_messages(sid, [message(f"{sid}|{i}") for i in range(n + 1)])

    for n, sid in enumerate(ids):
        records = await store.read_messages(sid)
        assert [m.body["text"] for m in records] == [f"{sid}|{i}" for i in range(n + 1)]
        assert {m.session_id for m in records} == {sid}
        assert await store.next_seq(sid) == n + 1
        assert [m.seq for m in await store.read_messages(sid, from_seq=1, limit=1)] == (
            [1] if n else [])


async def test_concurrent_writers_keep_seqs_unique_and_contiguous(
        store: Store, open_more: Callable[..., Awaitable[Store]]) -> None:
    await store.create_session("busy")
    writers = [store, *[await open_more() for _ in range(3)]]

    async def write(number: int, writer: Store) -> list[list[int]]:
        return [await writer.append_messages(
            "busy", [message(f"{number}-{i}-{k}") for k in range(3)]) for i in range(8)]

    batches = await asyncio.gather(*(write(n, w) for n, w in enumerate(writers)))

    every_seq = sorted(seq for per_writer in batches for batch in per_writer for seq in batch)
    assert every_seq == list(range(4 * 8 * 3))
    records = {m.seq: m.body["text"] for m in await store.read_messages("busy")}
    for number, per_writer in enumerate(batches):
        for i, batch in enumerate(per_writer):
            assert batch == list(range(batch[0], batch[0] + 3))
            assert [records[seq] for seq in batch] == [f"{number}-{i}-{k}" for k in range(3)]
    assert await store.next_seq("busy") == 96
