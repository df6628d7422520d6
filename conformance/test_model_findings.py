"""Regression tests for the store bugs the stateful model test found: one small
deterministic case each, on every backend. All were fixed in beba0bf ("Fix the bugs the
suites found"); each test first failed (as a strict xfail) on the commit before it.
"""

from __future__ import annotations

import json

import pytest

from power_loop import InvalidArgumentError, LeaseLostError, NewMessage, Store


async def _export(store: Store, session_id: str) -> list[str]:
    return [line async for line in store.export_session(session_id)]


async def test_session_without_prompt_round_trips(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [NewMessage(0, "user", {"text": "hi"})])
    lines = await _export(store, "s")
    await store.delete_session("s")
    assert await store.import_session(lines) == "s"
    assert (await store.get_session("s")).system_prompt is None
    assert await _export(store, "s") == lines


async def test_export_keeps_json_key_order(store: Store) -> None:
    await store.create_session("s", system_prompt="p", metadata={"z": 1, "a": 2})
    await store.append_messages("s", [NewMessage(0, "user", {"z": {"y": 1, "b": 2}, "a": 3})])
    await store.import_session(await _export(store, "s"), replace=True)
    assert list((await store.get_session("s")).metadata) == ["z", "a"]
    body = (await store.read_messages("s"))[0].body
    assert json.dumps(body) == '{"z": {"y": 1, "b": 2}, "a": 3}'


async def test_extend_lease_needs_a_held_lease(store: Store) -> None:
    # Was: the append matched the epoch and set an expiry on a lease nobody held.
    await store.create_session("s")
    lease = await store.acquire_lease("s", "w1", ttl=60)
    assert await store.release_lease(lease)
    with pytest.raises(LeaseLostError):
        await store.append_messages("s", [NewMessage(0, "user", {})], epoch=lease.epoch,
                                    extend_lease=60)
    record = await store.get_session("s")
    assert (record.lease_owner, record.lease_expires_at, record.next_seq) == (None, None, 0)


async def test_negative_limit_is_rejected_alike(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [NewMessage(0, "user", {})])
    with pytest.raises(InvalidArgumentError):
        await store.read_messages("s", limit=-1)


async def test_import_does_not_revive_stale_epochs(store: Store) -> None:
    # Was: the import restored the exported epoch, so the next grant handed out an epoch
    # a writer fenced out before the import still held, and its writes landed again.
    await store.create_session("s", system_prompt="p")
    first = await store.acquire_lease("s", "w1", ttl=60)
    backup = await _export(store, "s")
    assert await store.release_lease(first)
    fenced_out = await store.acquire_lease("s", "w2", ttl=60)
    await store.import_session(backup, replace=True)  # restore the backup over it
    current = await store.acquire_lease("s", "w3", ttl=60)
    assert current.epoch > fenced_out.epoch
    with pytest.raises(LeaseLostError):
        await store.append_messages("s", [NewMessage(0, "user", {"zombie": True})],
                                    epoch=fenced_out.epoch)
    assert await store.read_messages("s") == []
