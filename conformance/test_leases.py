"""Leases: grants, epochs, busy errors, expiry, takeover, and fenced writes."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance.probes import count_rows
from conformance.samples import message
from conformance.waiting import past
from power_loop import (
    InvalidArgumentError,
    Lease,
    LeaseLostError,
    SessionBusyError,
    Store,
)


async def _taken_over(store: Store, session_id: str = "s") -> tuple[Lease, Lease]:
    """``worker-a``'s lease lapses and ``worker-b`` takes the session over."""
    old = await store.acquire_lease(session_id, "worker-a", ttl=0.2)
    await past(store, old.expires_at)
    new = await store.acquire_lease(session_id, "worker-b", ttl=30)
    return old, new


async def test_first_grant_has_epoch_one_and_records_the_holder(store: Store) -> None:
    created = await store.create_session("s")

    lease = await store.acquire_lease("s", "worker-a", ttl=30)

    assert (lease.session_id, lease.owner, lease.epoch) == ("s", "worker-a", 1)
    assert lease.expires_at > created.created_at
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch) == ("worker-a", 1)
    assert session.lease_expires_at == lease.expires_at


async def test_reacquire_by_the_holder_keeps_the_epoch_and_extends(store: Store) -> None:
    await store.create_session("s")
    short = await store.acquire_lease("s", "worker-a", ttl=5)

    long = await store.acquire_lease("s", "worker-a", ttl=600)

    assert long.epoch == short.epoch == 1
    assert long.expires_at > short.expires_at
    assert (await store.get_session("s")).lease_expires_at == long.expires_at


async def test_every_new_grant_bumps_the_epoch(store: Store) -> None:
    await store.create_session("s")
    epochs = []
    for owner in ("worker-a", "worker-a", "worker-b", "worker-a"):
        lease = await store.acquire_lease("s", owner, ttl=30)
        epochs.append(lease.epoch)
        assert await store.release_lease(lease) is True

    assert epochs == [1, 2, 3, 4]
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_expires_at, session.lease_epoch) == (
        None, None, 4)


async def test_busy_error_names_holder_and_retry_after(store: Store) -> None:
    await store.create_session("s")
    held = await store.acquire_lease("s", "worker-a", ttl=30)

    with pytest.raises(SessionBusyError) as info:
        await store.acquire_lease("s", "worker-b", ttl=30)

    assert info.value.code == "session_busy"
    assert (info.value.session_id, info.value.holder) == ("s", "worker-a")
    assert 0 < info.value.retry_after <= 30
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch) == ("worker-a", held.epoch)
    assert session.lease_expires_at == held.expires_at


async def test_expired_lease_is_taken_over_with_a_new_epoch(store: Store) -> None:
    await store.create_session("s")

    old, new = await _taken_over(store)

    assert (new.owner, new.epoch) == ("worker-b", old.epoch + 1)
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch) == ("worker-b", new.epoch)


async def test_renew_extends_a_held_lease(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=5)

    renewed = await store.renew_lease(lease, ttl=600)

    assert (renewed.owner, renewed.epoch) == (lease.owner, lease.epoch)
    assert renewed.expires_at > lease.expires_at
    assert (await store.get_session("s")).lease_expires_at == renewed.expires_at


async def test_renew_after_takeover_raises_lease_lost(store: Store) -> None:
    await store.create_session("s")
    old, new = await _taken_over(store)

    with pytest.raises(LeaseLostError) as info:
        await store.renew_lease(old, ttl=30)

    assert info.value.code == "lease_lost"
    assert (info.value.session_id, info.value.epoch) == ("s", old.epoch)
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch) == ("worker-b", new.epoch)
    assert session.lease_expires_at == new.expires_at


async def test_renew_after_release_raises_lease_lost(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=30)
    await store.release_lease(lease)

    with pytest.raises(LeaseLostError) as info:
        await store.renew_lease(lease, ttl=30)

    assert info.value.code == "lease_lost"
    assert (await store.get_session("s")).lease_owner is None


async def test_renew_by_another_owner_with_the_current_epoch_is_refused(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=30)
    impostor = Lease("s", "worker-b", lease.epoch, lease.expires_at)

    with pytest.raises(LeaseLostError):
        await store.renew_lease(impostor, ttl=600)

    assert (await store.get_session("s")).lease_expires_at == lease.expires_at


async def test_release_after_takeover_leaves_the_new_holder_alone(store: Store) -> None:
    await store.create_session("s")
    old, new = await _taken_over(store)

    assert await store.release_lease(old) is False

    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch) == ("worker-b", new.epoch)
    assert session.lease_expires_at == new.expires_at
    with pytest.raises(SessionBusyError):
        await store.acquire_lease("s", "worker-a", ttl=30)


async def test_second_release_reports_nothing_held(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=30)

    assert await store.release_lease(lease) is True
    assert await store.release_lease(lease) is False


MAX_TTL = 366 * 86_400  # the longest lease power_loop grants: a year, in seconds

TtlWriter = Callable[[Store, Any], Awaitable[object]]
_TTL_WRITERS: dict[str, TtlWriter] = {
    "acquire_lease": lambda s, ttl: s.acquire_lease("s", "worker-a", ttl=ttl),
    "begin_send": lambda s, ttl: s.begin_send("s", [message("q")], owner="worker-a", ttl=ttl),
    "claim_session": lambda s, ttl: s.claim_session("s", owner="worker-a", ttl=ttl),
}


@pytest.mark.parametrize("ttl", [0, -1.5, math.nan, math.inf, -math.inf, MAX_TTL + 0.001,
                                 1e12, 1e20, "30", None, True],
                         ids=["zero", "negative", "nan", "inf", "-inf", "year+1ms", "1e12",
                              "1e20", "str", "none", "bool"])
@pytest.mark.parametrize("place", sorted(_TTL_WRITERS))
async def test_a_ttl_outside_zero_to_a_year_is_rejected(store: Store, place: str,
                                                         ttl: Any) -> None:
    await store.create_session("s")
    before = await store.get_session("s")

    with pytest.raises(InvalidArgumentError) as info:
        await _TTL_WRITERS[place](store, ttl)

    assert info.value.code == "invalid_argument"
    assert await store.get_session("s") == before
    assert await count_rows(store, "sends") == 0


@pytest.mark.parametrize("ttl", [0, math.inf, MAX_TTL + 1, "30"])
async def test_renewing_with_a_bad_ttl_is_rejected(store: Store, ttl: Any) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=30)
    before = await store.get_session("s")

    with pytest.raises(InvalidArgumentError):
        await store.renew_lease(lease, ttl=ttl)
    with pytest.raises(InvalidArgumentError):
        await store.append_messages("s", [message("a")], epoch=lease.epoch, extend_lease=ttl)

    assert await store.get_session("s") == before
    assert await count_rows(store, "messages") == 0


@pytest.mark.parametrize("ttl", [0.001, 1, MAX_TTL])
async def test_a_ttl_up_to_a_year_is_granted(store: Store, ttl: float) -> None:
    await store.create_session("s")
    before = datetime.now(UTC)

    lease = await store.acquire_lease("s", "worker-a", ttl=ttl)

    assert lease.epoch == 1
    # The database clock grants it; allow a few seconds of drift between the clocks.
    assert abs(lease.expires_at - (before + timedelta(seconds=ttl))) < timedelta(seconds=5)


async def test_fenced_writes_with_the_current_epoch_succeed(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "worker-a", ttl=30)

    seqs = await store.append_messages("s", [message("a")], epoch=lease.epoch)
    send = await store.start_send("s", [message("q")], epoch=lease.epoch)
    done = await store.finish_send("s", send.send_index, [message("r", role="assistant")],
                                   epoch=lease.epoch)

    assert (seqs, send.first_seq, done.status) == ([0], 1, "done")
    assert await store.next_seq("s") == 3


async def test_stale_append_raises_and_writes_nothing(store: Store) -> None:
    await store.create_session("s")
    old, new = await _taken_over(store)
    before = await store.get_session("s")

    with pytest.raises(LeaseLostError) as info:
        await store.append_messages("s", [message("late"), message("later")], epoch=old.epoch)

    assert info.value.code == "lease_lost"
    assert (info.value.session_id, info.value.epoch) == ("s", old.epoch)
    assert await store.get_session("s") == before
    assert await count_rows(store, "messages") == 0
    assert await store.append_messages("s", [message("now")], epoch=new.epoch) == [0]


async def test_stale_start_send_raises_and_writes_nothing(store: Store) -> None:
    await store.create_session("s")
    old, _ = await _taken_over(store)
    before = await store.get_session("s")

    with pytest.raises(LeaseLostError) as info:
        await store.start_send("s", [message("q")], epoch=old.epoch, request_key="k")

    assert info.value.code == "lease_lost"
    assert await store.get_session("s") == before
    assert await store.list_sends("s") == []
    assert await count_rows(store, "messages") == 0


async def test_stale_finish_send_raises_and_leaves_the_send_pending(store: Store) -> None:
    await store.create_session("s")
    old = await store.acquire_lease("s", "worker-a", ttl=0.2)
    send = await store.start_send("s", [message("q")], epoch=old.epoch)
    await past(store, old.expires_at)
    new = await store.acquire_lease("s", "worker-b", ttl=30)
    before = await store.get_session("s")

    with pytest.raises(LeaseLostError) as info:
        await store.finish_send("s", send.send_index, [message("stale", role="assistant")],
                                epoch=old.epoch, usage={"input_tokens": 1})

    assert info.value.code == "lease_lost"
    assert await store.get_session("s") == before
    assert await store.get_send("s", send.send_index) == send
    assert [m.body["text"] for m in await store.read_messages("s")] == ["q"]
    finished = await store.finish_send("s", send.send_index, epoch=new.epoch)
    assert finished.status == "done"
