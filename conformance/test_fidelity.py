"""Data fidelity: what goes in comes back exactly, and what cannot is refused alike."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance.probes import count_rows, raw_json_column
from conformance.samples import TRICKY_TEXTS, export_text, lines_of, message
from power_loop import InvalidArgumentError, Lease, NewMessage, Store

Writer = Callable[[Store, Any], Awaitable[object]]
Reader = Callable[[Store], Awaitable[object]]


@pytest.mark.parametrize("name", sorted(TRICKY_TEXTS))
async def test_text_round_trips_exactly(store: Store, name: str) -> None:
    text = TRICKY_TEXTS[name]
    body = {"text": text, text: [text, {text: text}]}
    await store.create_session("s", system_prompt=text, metadata={text: text, "n": [text]})
    await store.append_messages("s", [NewMessage(0, "user", body)])
    await store.start_send("s", [message(text)])
    await store.finish_send("s", 0, usage={text: 1}, error={"message": text}, status="failed")

    session = await store.get_session("s")
    assert (session.system_prompt, session.metadata) == (text, {text: text, "n": [text]})
    first, second = await store.read_messages("s")
    assert (first.body, second.body) == (body, {"text": text})
    send = await store.get_send("s", 0)
    assert (send.usage, send.error) == ({text: 1}, {"message": text})


async def test_five_megabyte_body_round_trips(store: Store) -> None:
    chunk = "0123456789 abcdef é ש 漢 😀 \u0301\n"
    text = chunk * (5 * 1024 * 1024 // len(chunk.encode()) + 1)
    assert len(text.encode()) > 5 * 1024 * 1024
    await store.create_session("big")

    await store.append_messages("big", [message(text), message("after")])

    big, after = await store.read_messages("big")
    assert big.body["text"] == text
    assert after.body["text"] == "after"


async def test_nul_in_content_is_kept_everywhere(store: Store) -> None:
    nul = "\x00"
    await store.create_session("s", system_prompt=f"{nul}sys{nul}",
                               metadata={f"k{nul}": f"v{nul}", "only": nul})
    await store.start_send("s", [message(nul, role="user", extra=f"a{nul}b")])
    await store.finish_send("s", 0, usage={nul: nul}, error={"e": nul})

    session = await store.get_session("s")
    assert session.system_prompt == f"{nul}sys{nul}"
    assert session.metadata == {f"k{nul}": f"v{nul}", "only": nul}
    [stored] = await store.read_messages("s")
    assert stored.body == {"text": nul, "extra": f"a{nul}b"}
    send = await store.get_send("s", 0)
    assert (send.usage, send.error) == ({nul: nul}, {"e": nul})


_ID_WRITERS: dict[str, Writer] = {
    "session_id": lambda s, v: s.create_session(v),
    "parent_id": lambda s, v: s.create_session("child", parent_id=v),
    "get_session": lambda s, v: s.get_session(v),
    "read_messages": lambda s, v: s.read_messages(v),
    "owner": lambda s, v: s.acquire_lease("s", v, ttl=30),
    "request_key": lambda s, v: s.start_send("s", [message("q")], request_key=v),
    "begin_send_owner": lambda s, v: s.begin_send("s", [message("q")], owner=v, ttl=30),
    "claim_owner": lambda s, v: s.claim_session("s", owner=v, ttl=30),
    "pause_send": lambda s, v: s.pause_send(v, 0, [], error={},
                                            lease=Lease(v, "o", 1, datetime.now(UTC))),
}


async def _snapshot(store: Store) -> tuple[str, int]:
    return await export_text(store, "s"), await count_rows(store, "sessions")


@pytest.mark.parametrize("place", sorted(_ID_WRITERS))
async def test_nul_in_identifiers_is_rejected(store: Store, place: str) -> None:
    await store.create_session("s")
    before = await _snapshot(store)

    with pytest.raises(InvalidArgumentError) as info:
        await _ID_WRITERS[place](store, "a\x00b")

    assert info.value.code == "invalid_argument"
    assert await _snapshot(store) == before


@pytest.mark.parametrize("surrogate", ["\ud800", "\udcff"], ids=["high", "low"])
@pytest.mark.parametrize("place", sorted(_ID_WRITERS))
async def test_lone_surrogate_in_identifiers_is_rejected(store: Store, place: str,
                                                         surrogate: str) -> None:
    await store.create_session("s")
    before = await _snapshot(store)

    with pytest.raises(InvalidArgumentError) as info:
        await _ID_WRITERS[place](store, f"id{surrogate}")

    assert info.value.code == "invalid_argument"
    assert await _snapshot(store) == before


async def _last_body(store: Store) -> object:
    return (await store.read_messages("s"))[-1].body


async def _send_usage(store: Store) -> object:
    return (await store.get_send("s", 0)).usage


async def _send_error(store: Store) -> object:
    return (await store.get_send("s", 0)).error


async def _prompt(store: Store) -> object:
    return (await store.get_session("s")).system_prompt


async def _metadata(store: Store) -> object:
    return (await store.get_session("s")).metadata


# Where JSON content goes in: how to write a value there, how to read it back, what the
# stored document is (with the value in a key as well as in a value where that fits),
# and the table and column that hold it.
_CONTENT_PLACES: dict[str, tuple[Writer, Reader, Callable[[str], object], str, str]] = {
    "message_body": (lambda s, v: s.append_messages("s", [message("ok"), message(v)]),
                     _last_body, lambda v: {"text": v}, "messages", "body"),
    "body_key": (lambda s, v: s.append_messages("s", [NewMessage(0, "user", {v: [v]})]),
                 _last_body, lambda v: {v: [v]}, "messages", "body"),
    "system_prompt": (lambda s, v: s.create_session("s", system_prompt=v),
                      _prompt, lambda v: v, "sessions", "system_prompt"),
    "metadata": (lambda s, v: s.create_session("s", metadata={"k": v, v: {"n": [v]}}),
                 _metadata, lambda v: {"k": v, v: {"n": [v]}}, "sessions", "metadata"),
    "send_message": (lambda s, v: s.finish_send("s", 0, [message(v, role="assistant")]),
                     _last_body, lambda v: {"text": v}, "messages", "body"),
    "usage": (lambda s, v: s.finish_send("s", 0, usage={"k": v, v: 1}),
              _send_usage, lambda v: {"k": v, v: 1}, "sends", "token_usage"),
    "error": (lambda s, v: s.finish_send("s", 0, status="failed", error={"k": v, v: v}),
              _send_error, lambda v: {"k": v, v: v}, "sends", "error"),
}
_SESSION_PLACES = {"system_prompt", "metadata"}  # these write the session itself

# Lone surrogates: what `surrogateescape` decoding makes of undecodable bytes (U+DC80 to
# U+DCFF), and the other kinds. Each is a code point no UTF-8 encoder accepts.
LONE_SURROGATES = {"high": "\ud800", "high_last": "\udbff", "low": "\udc00",
                   "escaped_byte": "\udcff", "low_then_high": "\udc80\ud83d"}


async def _write_content(store: Store, place: str, value: str) -> None:
    write = _CONTENT_PLACES[place][0]
    if place not in _SESSION_PLACES:
        await store.create_session("s")
        await store.start_send("s", [message("q")])
    await write(store, value)


@pytest.mark.parametrize("surrogate", sorted(LONE_SURROGATES))
@pytest.mark.parametrize("place", sorted(_CONTENT_PLACES))
async def test_lone_surrogate_in_content_round_trips_exactly(
        store: Store, place: str, surrogate: str) -> None:
    lone = LONE_SURROGATES[surrogate]
    value = f"{lone}lead, in{lone}side, trailing{lone}"
    _, read, expected, table, column = _CONTENT_PLACES[place]

    await _write_content(store, place, value)

    assert await read(store) == expected(value)
    # Kept as JSON escapes: the column holds valid text that every engine accepts.
    raw = await raw_json_column(store, table, column, "s")
    assert raw.encode("utf-8")
    assert all(f"\\u{ord(c):04x}" in raw for c in lone)
    # And through an export and an import, into the session it came from.
    exported = await export_text(store, "s")
    await store.delete_session("s")
    assert await store.import_session(lines_of(exported)) == "s"
    assert await read(store) == expected(value)
    assert await export_text(store, "s") == exported


@pytest.mark.parametrize("place", sorted(_CONTENT_PLACES))
async def test_a_high_then_low_surrogate_reads_back_as_its_character(store: Store,
                                                                      place: str) -> None:
    # The one documented normalization of text that is not valid Unicode: JSON's
    # \uXXXX escapes cannot tell two surrogate code points from the pair they encode.
    value = "pair \ud83d\ude00 pair"
    _, read, expected, _, _ = _CONTENT_PLACES[place]

    await _write_content(store, place, value)

    assert await read(store) == expected("pair \U0001f600 pair")


async def test_an_export_holding_lone_surrogates_is_utf8_text(store: Store) -> None:
    await _write_content(store, "message_body", "escaped byte \udcff")

    exported = await export_text(store, "s")

    # The format is UTF-8 JSON Lines: every line must be writable to a file as such.
    assert exported.encode("utf-8").decode("utf-8") == exported


JSON_VALUE: dict[str, Any] = {
    "z_first": "keys keep their order",
    "nested": {"a": [1, [2, [3, {"b": None, "c": [[], {}]}]]]},
    "ünïcødé ключ 😀": "value",
    "": "empty key",
    "max_safe": 2**53, "min_safe": -(2**53), "beyond": 2**64 + 1,
    "float": 0.1, "tiny": 5e-324, "huge": 1.7976931348623157e308, "negative_zero": -0.0,
    "exp": 6.02214076e23, "true": True, "false": False, "null": None,
    "int_like_float": 3.0,
}


async def test_json_types_round_trip(store: Store) -> None:
    await store.create_session("s", metadata=JSON_VALUE)
    await store.append_messages("s", [NewMessage(0, "user", JSON_VALUE)])

    for got in ((await store.get_session("s")).metadata,
                (await store.read_messages("s"))[0].body):
        assert got == JSON_VALUE
        assert list(got) == list(JSON_VALUE)
        assert [type(v) for v in got.values()] == [type(v) for v in JSON_VALUE.values()]
        assert math.copysign(1.0, got["negative_zero"]) == -1.0


_KEY_WRITERS: dict[str, Writer] = {
    "message_body": lambda s, k: s.append_messages("s", [NewMessage(0, "user", {k: 1})]),
    "metadata": lambda s, k: s.create_session("new", metadata={k: 1}),
    "usage": lambda s, k: s.finish_send("s", 0, usage={"nested": {k: 1}}),
}


@pytest.mark.parametrize("key", [1, None, 2.5, True], ids=["int", "none", "float", "bool"])
@pytest.mark.parametrize("place", sorted(_KEY_WRITERS))
async def test_non_string_keys_are_rejected(store: Store, place: str, key: object) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])
    before = await _snapshot(store)

    with pytest.raises(InvalidArgumentError):
        await _KEY_WRITERS[place](store, key)

    assert await _snapshot(store) == before


_NON_FINITE: dict[str, Writer] = {
    "message_body": lambda s, v: s.append_messages("s", [NewMessage(0, "user", {"x": v})]),
    "metadata": lambda s, v: s.create_session("new", metadata={"x": v}),
    "usage": lambda s, v: s.finish_send("s", 0, usage={"x": v}),
}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("place", sorted(_NON_FINITE))
async def test_non_finite_numbers_are_rejected(store: Store, place: str, value: float) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])
    before = await _snapshot(store)

    with pytest.raises(InvalidArgumentError) as info:
        await _NON_FINITE[place](store, value)

    assert info.value.code == "invalid_argument"
    assert await _snapshot(store) == before


def _assert_recent_utc(value: datetime | None, now: datetime) -> None:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert abs(value - now) < timedelta(minutes=5)


async def test_timestamps_are_aware_utc_close_to_now_and_ordered(store: Store) -> None:
    now = datetime.now(UTC)
    created = await store.create_session("s")
    stamps = [created.updated_at]
    lease = await store.acquire_lease("s", "worker", ttl=30)
    stamps.append((await store.get_session("s")).updated_at)
    await store.append_messages("s", [message("a")], epoch=lease.epoch)
    stamps.append((await store.get_session("s")).updated_at)
    send = await store.start_send("s", [message("q")], epoch=lease.epoch)
    finished = await store.finish_send("s", send.send_index, epoch=lease.epoch)
    session = await store.get_session("s")
    stamps.append(session.updated_at)

    assert created.created_at <= created.updated_at
    assert session.created_at == created.created_at
    assert stamps == sorted(stamps)
    assert finished.finished_at is not None and finished.created_at <= finished.finished_at
    assert lease.expires_at > created.created_at
    messages = await store.read_messages("s")
    for value in [created.created_at, session.updated_at, lease.expires_at,
                  finished.created_at, finished.finished_at,
                  *(m.created_at for m in messages)]:
        _assert_recent_utc(value, now)
    assert all(created.created_at <= m.created_at <= session.updated_at for m in messages)
