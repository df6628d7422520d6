"""Maintenance: retention pruning and vacuum."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from conformance.probes import NO_ROWS, count_rows, session_row_counts
from conformance.samples import build_rich_session, export_text, message
from conformance.waiting import past
from power_loop import InvalidArgumentError, Store


async def _fill(store: Store, session_id: str) -> None:
    await store.create_session(session_id, system_prompt="p")
    send = await store.start_send(session_id, [message("q")], request_key="k")
    await store.finish_send(session_id, send.send_index, [message("a", role="assistant")])


async def test_prune_deletes_old_sessions_but_keeps_leased_and_newer_ones(store: Store) -> None:
    for sid in ("old-1", "old-2", "old-3", "old-leased", "old-lapsed"):
        await _fill(store, sid)
    await store.acquire_lease("old-leased", "worker", ttl=600)
    lapsing = await store.acquire_lease("old-lapsed", "worker", ttl=0.2)
    old = [await store.get_session(sid) for sid in
           ("old-1", "old-2", "old-3", "old-leased", "old-lapsed")]
    cutoff = max(s.updated_at for s in old) + timedelta(microseconds=1)
    await past(store, max(cutoff, lapsing.expires_at))  # the short lease lapsed too
    await _fill(store, "new")
    assert (await store.get_session("new")).updated_at > cutoff
    kept_before = {sid: await export_text(store, sid) for sid in ("old-leased", "new")}

    deleted = await store.prune(older_than=cutoff, batch_size=2)

    assert deleted == 4
    for sid in ("old-1", "old-2", "old-3", "old-lapsed"):
        assert await session_row_counts(store, sid) == NO_ROWS
    for sid, export in kept_before.items():
        assert await export_text(store, sid) == export
    assert await count_rows(store, "sessions") == 2
    assert await count_rows(store, "messages") == 4
    assert await count_rows(store, "sends") == 2


async def test_prune_with_nothing_old_deletes_nothing(store: Store) -> None:
    await _fill(store, "s")
    created = await store.get_session("s")

    assert await store.prune(older_than=created.updated_at) == 0
    assert await session_row_counts(store, "s") == {**NO_ROWS, "sessions": 1, "messages": 2,
                                                    "sends": 1}


async def test_prune_rejects_a_naive_cutoff(store: Store) -> None:
    await _fill(store, "s")

    with pytest.raises(InvalidArgumentError) as info:
        await store.prune(older_than=datetime(2000, 1, 1))  # noqa: DTZ001

    assert info.value.code == "invalid_argument"
    assert await count_rows(store, "sessions") == 1


async def test_vacuum_keeps_every_row(store: Store) -> None:
    for sid in ("rich", "doomed"):
        await build_rich_session(store, sid)
    before = await export_text(store, "rich")
    await store.delete_session("doomed")

    await store.vacuum()
    await store.vacuum()

    assert await export_text(store, "rich") == before
    assert await count_rows(store, "sessions") == 1
    await store.append_messages("rich", [message("still writable")])
    assert (await store.read_messages("rich"))[-1].body["text"] == "still writable"
