"""Hostile input: identifiers stored verbatim, table prefixes refused before any SQL."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conformance.probes import ALL_TABLES, count_rows, existing_tables
from conformance.samples import message
from power_loop import (
    ConnectionLostError,
    InvalidArgumentError,
    InvalidIdentifierError,
    Lease,
    SessionBusyError,
    SessionExistsError,
    Store,
    StoreFileError,
    open_store,
)
from power_loop.testing import backend_dsn, drop_store_tables, fresh_prefix

HOSTILE_IDS = [
    "'; DROP TABLE x; --", "\" OR 1=1 --", "`backtick`", "%s", "%(x)s", "%%", "?", "$1",
    "{now}", "{}", "\\", "\\'", "a'b\"c`d", "   ", "\t\n", " a", "a ", "a", "A", "ß", "ss",
    unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é"), "_", "%", "*",
    "NULL", "null", "😀" * 200, "x" * 200, "\u202eevil", "a\u200bb", "ab",
]


async def test_hostile_ids_are_distinct_sessions_stored_verbatim(store: Store) -> None:
    assert len(set(HOSTILE_IDS)) == len(HOSTILE_IDS)
    for sid in HOSTILE_IDS:
        await store.create_session(sid, metadata={"id": sid})
        await store.append_messages(sid, [message(sid)])

    for sid in HOSTILE_IDS:
        session = await store.get_session(sid)
        assert (session.id, session.metadata) == (sid, {"id": sid})
        [stored] = await store.read_messages(sid)
        assert (stored.session_id, stored.body["text"]) == (sid, sid)
    listed = await store.list_sessions(limit=1000)
    assert sorted(s.id for s in listed) == sorted(HOSTILE_IDS)
    assert await existing_tables(store._database, store.table_prefix) == ALL_TABLES
    assert await count_rows(store, "sessions") == len(HOSTILE_IDS)
    assert await count_rows(store, "messages") == len(HOSTILE_IDS)


@pytest.mark.parametrize("pair", [("a", "a "), (" a", "a"), ("a", "A"), ("ß", "ss"),
                                  ("é", "e\u0301"), ("a", "a\t")],
                         ids=["trailing-space", "leading-space", "case", "sharp-s",
                              "nfc-nfd", "tab"])
async def test_near_identical_ids_are_different_sessions(
        store: Store, pair: tuple[str, str]) -> None:
    first, second = pair
    await store.create_session(first, system_prompt="first")
    await store.create_session(second, system_prompt="second")

    assert (await store.get_session(first)).system_prompt == "first"
    assert (await store.get_session(second)).system_prompt == "second"
    with pytest.raises(SessionExistsError):
        await store.create_session(second)
    await store.delete_session(first)
    assert (await store.get_session(second)).system_prompt == "second"


async def test_hostile_owner_and_request_key_round_trip(store: Store) -> None:
    owner, key = "'; DROP TABLE x; -- 😀 ", "\" OR 1=1 -- %s ? $1 {now} \\"
    await store.create_session("s")

    lease = await store.acquire_lease("s", owner, ttl=30)
    with pytest.raises(SessionBusyError) as busy:
        await store.acquire_lease("s", owner.strip(), ttl=30)
    send = await store.start_send("s", [message("q")], epoch=lease.epoch, request_key=key)

    assert lease.owner == owner == (await store.get_session("s")).lease_owner
    assert busy.value.holder == owner
    assert send.request_key == key
    assert await store.start_send("s", [message("again")], request_key=key) == send
    assert await store.release_lease(Lease("s", owner.strip(), lease.epoch,
                                           lease.expires_at)) is False
    assert await store.release_lease(lease) is True


IdWriter = Callable[[Store, str], Awaitable[object]]
_ID_WRITERS: dict[str, IdWriter] = {
    "session_id": lambda s, v: s.create_session(v),
    "parent_id": lambda s, v: s.create_session("child", parent_id=v),
    "owner": lambda s, v: s.acquire_lease("s", v, ttl=30),
    "request_key": lambda s, v: s.start_send("s", [message("q")], request_key=v),
    "pause_send": lambda s, v: s.pause_send(v, 0, [], error={},
                                            lease=Lease(v, "o", 1, datetime.now(UTC))),
}


@pytest.mark.parametrize("value", ["x" * 200, "😀" * 200, "\U0002070e" * 200],
                         ids=["ascii", "emoji", "cjk-ext-b"])
@pytest.mark.parametrize("place", sorted(set(_ID_WRITERS) - {"pause_send"}))
async def test_two_hundred_characters_are_accepted(store: Store, place: str,
                                                   value: str) -> None:
    await store.create_session("s")

    await _ID_WRITERS[place](store, value)

    if place == "session_id":
        assert (await store.get_session(value)).id == value
    elif place == "parent_id":
        assert (await store.get_session("child")).parent_id == value
    elif place == "owner":
        assert (await store.get_session("s")).lease_owner == value
    else:
        assert (await store.get_send("s", 0)).request_key == value


@pytest.mark.parametrize("value", ["x" * 201, "😀" * 201, ""], ids=["ascii", "emoji", "empty"])
@pytest.mark.parametrize("place", sorted(_ID_WRITERS))
async def test_empty_or_too_long_identifiers_are_rejected(
        store: Store, place: str, value: str) -> None:
    await store.create_session("s")

    with pytest.raises(InvalidArgumentError) as info:
        await _ID_WRITERS[place](store, value)

    assert info.value.code == "invalid_argument"
    session = await store.get_session("s")
    assert (session.lease_owner, session.send_count, session.next_seq) == (None, 0, 0)
    assert await count_rows(store, "sessions") == 1


HOSTILE_PREFIXES = ["x; DROP", "1abc", "a-b", "a b", "ä", "a" * 25, "pl_\n", "pl.", "\"q\"",
                    "`q`", "a/**/b", "pl_'", "pl_%s", "pl_?", " pl_", "pl_ "]
_UNREACHABLE = {"postgresql": "postgresql://nobody@127.0.0.1:1/x",
                "mysql": "mysql://nobody@127.0.0.1:1/x"}


def _unreachable_dsn(backend: str, tmp_path: Path) -> str:
    # A file backend (SQLite, or a registered one): its file in a missing directory.
    return _UNREACHABLE.get(backend) or backend_dsn(backend, tmp_path / "no-such-dir")


@pytest.mark.parametrize("prefix", HOSTILE_PREFIXES)
async def test_hostile_prefix_is_refused_before_any_sql(backend: str, tmp_path: Path,
                                                        prefix: str) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        await open_store(_unreachable_dsn(backend, tmp_path), table_prefix=prefix)

    assert info.value.code == "invalid_identifier"


async def test_the_unreachable_dsn_really_fails_to_connect(backend: str,
                                                           tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())

    # A server that does not answer; a SQLite file in a directory that does not exist.
    expected = ConnectionLostError if backend in _UNREACHABLE else StoreFileError
    with pytest.raises(expected) as info:
        await open_store(_unreachable_dsn(backend, tmp_path), table_prefix="pl_",
                         connect_timeout=5)

    assert info.value.code == expected.code
    # Nothing of the failed connection lives on: a driver thread still running now
    # would call back into this event loop after it has closed. (The default executor
    # may have started worker threads of its own meanwhile; they belong to the loop.)
    left = [t for t in set(threading.enumerate()) - threads_before
            if t.is_alive() and not t.name.startswith("asyncio_")]
    assert left == []


async def test_longest_allowed_prefix_works(dsn: str) -> None:
    prefix = fresh_prefix().rstrip("_").ljust(23, "x") + "_"
    assert len(prefix) == 24
    store = await open_store(dsn, table_prefix=prefix)
    try:
        await store.create_session("s")
        assert await existing_tables(store._database, prefix) == ALL_TABLES
    finally:
        await drop_store_tables(store)
        await store.aclose()
