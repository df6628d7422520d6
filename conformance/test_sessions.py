"""Sessions: create, read, list (newest first, in keyset pages) and delete."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from conformance.probes import NO_ROWS, count_rows, session_row_counts
from conformance.samples import export_text, lines_of, message
from power_loop import (
    InvalidArgumentError,
    Lease,
    SessionExistsError,
    SessionNotFoundError,
    SessionRecord,
    Store,
)

MISSING = "no-such-session"


async def test_create_then_get_round_trips_every_field(store: Store) -> None:
    created = await store.create_session(
        "s1", system_prompt="Be brief.", metadata={"user": "u1", "tags": ["a", "b"], "n": 3},
        parent_id="root")

    got = await store.get_session("s1")

    assert got == created
    assert (got.id, got.parent_id, got.system_prompt) == ("s1", "root", "Be brief.")
    assert got.metadata == {"user": "u1", "tags": ["a", "b"], "n": 3}
    assert (got.next_seq, got.send_count, got.pending_send) == (0, 0, None)
    assert (got.lease_owner, got.lease_epoch, got.lease_expires_at) == (None, 0, None)


async def test_defaults_and_empty_prompt_are_kept_apart(store: Store) -> None:
    plain = await store.create_session("plain")
    empty = await store.create_session("empty", system_prompt="", metadata={})

    assert (await store.get_session("plain")).system_prompt is None
    assert (await store.get_session("empty")).system_prompt == ""
    assert plain.metadata == {} == empty.metadata
    assert plain.parent_id is None


async def test_generated_ids_are_distinct(store: Store) -> None:
    first = await store.create_session()
    second = await store.create_session()

    assert first.id != second.id
    assert (await store.get_session(first.id)).id == first.id
    assert (await store.get_session(second.id)).id == second.id


async def test_duplicate_create_raises_and_keeps_the_original(store: Store) -> None:
    await store.create_session("dup", system_prompt="first", metadata={"v": 1})

    with pytest.raises(SessionExistsError) as info:
        await store.create_session("dup", system_prompt="second", metadata={"v": 2})

    assert info.value.code == "session_exists"
    assert info.value.session_id == "dup"
    kept = await store.get_session("dup")
    assert (kept.system_prompt, kept.metadata) == ("first", {"v": 1})
    assert await count_rows(store, "sessions") == 1


@pytest.mark.parametrize("metadata", [[1, 2], "text", [("k", "v")]],
                         ids=["list", "str", "pairs"])
async def test_metadata_must_be_a_mapping(store: Store, metadata: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await store.create_session("s", metadata=metadata)  # type: ignore[arg-type]

    assert info.value.code == "invalid_argument"
    assert await count_rows(store, "sessions") == 0


async def _drain_export(store: Store) -> str:
    return await export_text(store, MISSING)


_MISSING_OPS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "get_session": lambda s: s.get_session(MISSING),
    "delete_session": lambda s: s.delete_session(MISSING),
    "append_messages": lambda s: s.append_messages(MISSING, [message("hi")]),
    "append_messages_fenced": lambda s: s.append_messages(MISSING, [message("hi")], epoch=1),
    "next_seq": lambda s: s.next_seq(MISSING),
    "acquire_lease": lambda s: s.acquire_lease(MISSING, "owner", ttl=30),
    "renew_lease": lambda s: s.renew_lease(Lease(MISSING, "owner", 1, datetime.now(UTC)),
                                           ttl=30),
    "start_send": lambda s: s.start_send(MISSING, [message("hi")]),
    "start_send_with_key": lambda s: s.start_send(MISSING, [message("hi")], request_key="k"),
    "finish_send": lambda s: s.finish_send(MISSING, 0),
    "export_session": _drain_export,
    "read_messages": lambda s: s.read_messages(MISSING),
    "list_sends": lambda s: s.list_sends(MISSING),
    "get_send": lambda s: s.get_send(MISSING, 0),
}


@pytest.mark.parametrize("operation", sorted(_MISSING_OPS))
async def test_missing_session_raises_not_found(store: Store, operation: str) -> None:
    await store.create_session("present")
    await store.append_messages("present", [message("hi")])

    with pytest.raises(SessionNotFoundError) as info:
        await _MISSING_OPS[operation](store)

    assert type(info.value) is SessionNotFoundError  # e.g. never SendNotFoundError
    assert info.value.code == "session_not_found"
    assert info.value.session_id == MISSING
    assert await session_row_counts(store, MISSING) == NO_ROWS
    assert await count_rows(store, "sessions") == 1


async def test_release_on_missing_session_reports_nothing_held(store: Store) -> None:
    assert await store.release_lease(Lease(MISSING, "owner", 1, datetime.now(UTC))) is False


async def test_delete_removes_the_session_and_its_rows_only(store: Store) -> None:
    for sid in ("gone", "kept"):
        await store.create_session(sid)
        send = await store.start_send(sid, [message("q")], request_key="k")
        await store.finish_send(sid, send.send_index, [message("a", role="assistant")])
    kept_before = await export_text(store, "kept")

    await store.delete_session("gone")

    with pytest.raises(SessionNotFoundError):
        await store.get_session("gone")
    assert await session_row_counts(store, "gone") == NO_ROWS
    assert await export_text(store, "kept") == kept_before


async def test_recreated_session_starts_empty(store: Store) -> None:
    old = await store.create_session("again", metadata={"generation": 1})
    await store.start_send("again", [message("old")], request_key="k")
    await store.delete_session("again")

    fresh = await store.create_session("again", metadata={"generation": 2})
    send = await store.start_send("again", [message("new")], request_key="k")

    assert fresh.incarnation != old.incarnation  # another life of the same id
    assert (fresh.next_seq, fresh.send_count, fresh.pending_send) == (0, 0, None)
    assert (send.send_index, send.first_seq) == (0, 0)
    assert [m.body["text"] for m in await store.read_messages("again")] == ["new"]


async def test_incarnation_is_fresh_per_session_and_stable_across_writes(store: Store) -> None:
    first = await store.create_session("a")
    other = await store.create_session("b")
    lease = await store.acquire_lease("a", "worker", ttl=30)
    await store.append_messages("a", [message("x")], epoch=lease.epoch)
    send = await store.start_send("a", [message("q")], epoch=lease.epoch)
    await store.finish_send("a", send.send_index, release=lease)

    assert re.fullmatch(r"[0-9a-f]{32}", first.incarnation)
    assert first.incarnation != other.incarnation
    assert (await store.get_session("a")).incarnation == first.incarnation
    assert [s.incarnation for s in await store.list_sessions() if s.id == "a"] == [
        first.incarnation]


async def test_list_is_newest_first(store: Store) -> None:
    ids = [f"s{i:02d}" for i in range(12)]
    for sid in ids:
        await store.create_session(sid)

    listed = await store.list_sessions()

    assert [s.id for s in listed] == ids[::-1]
    stamps = [s.created_at for s in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert [s.id for s in await store.list_sessions(limit=3)] == ids[::-1][:3]


async def _all_pages(store: Store, limit: int,
                     between_pages: Callable[[], Awaitable[None]] | None = None
                     ) -> list[list[SessionRecord]]:
    pages = [await store.list_sessions(limit=limit)]
    while pages[-1]:
        if between_pages is not None:
            await between_pages()
        pages.append(await store.list_sessions(limit=limit, before=pages[-1][-1]))
    return pages


async def test_keyset_pages_cover_everything_once(store: Store) -> None:
    ids = [f"p{i:02d}" for i in range(23)]
    for sid in ids:
        await store.create_session(sid)

    pages = await _all_pages(store, limit=5)

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3, 0]
    assert [s.id for page in pages for s in page] == ids[::-1]


async def test_sessions_created_while_paging_do_not_shift_pages(store: Store) -> None:
    ids = [f"p{i:02d}" for i in range(10)]
    for sid in ids:
        await store.create_session(sid)
    created = iter(f"late{i}" for i in range(100))

    async def create_one() -> None:
        await store.create_session(next(created))

    pages = await _all_pages(store, limit=3, between_pages=create_one)

    assert [s.id for page in pages for s in page] == ids[::-1]
    assert await count_rows(store, "sessions") == 10 + len(pages) - 1


async def test_sessions_with_equal_creation_times_page_by_id(store: Store) -> None:
    # Import is the only way to give sessions the very same created_at on every backend.
    await store.create_session("template", system_prompt="p", metadata={"k": "v"})
    header, session_line = lines_of(await export_text(store, "template"))
    for i in range(10):
        sid = f"tie-{i:02d}"
        head, row = json.loads(header), json.loads(session_line)
        head["session_id"] = row["row"]["id"] = sid
        await store.import_session([json.dumps(head), json.dumps(row)])
    await store.delete_session("template")

    pages = await _all_pages(store, limit=3)

    listed = [s.id for page in pages for s in page]
    assert listed == [f"tie-{i:02d}" for i in reversed(range(10))]
    assert len({s.created_at for page in pages for s in page}) == 1


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_rejects_non_positive_limit(store: Store, limit: int) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await store.list_sessions(limit=limit)
    assert info.value.code == "invalid_argument"
