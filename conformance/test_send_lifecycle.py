"""The loop's fused send operations: begin_send, claim_session, pause_send, finish+release,
and appends that extend the lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from conformance.probes import count_rows
from conformance.samples import message
from conformance.waiting import past
from power_loop import (
    InvalidArgumentError,
    Lease,
    LeaseLostError,
    SendPendingError,
    SessionBusyError,
    Store,
)


async def test_begin_send_takes_the_lease_and_opens_the_send(store: Store) -> None:
    await store.create_session("s", system_prompt="sys", metadata={"tenant": "t-1"})
    await store.append_messages("s", [message("before")])

    start = await store.begin_send("s", [message("q", send_index=9)], owner="loop-1", ttl=30,
                                   request_key="k")

    assert start.lease is not None and start.existing is None
    assert (start.lease.owner, start.lease.epoch) == ("loop-1", 1)
    assert (start.send_index, start.first_seq, start.system_prompt) == (0, 1, "sys")
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_epoch, session.pending_send) == ("loop-1", 1, 0)
    assert session.lease_expires_at == start.lease.expires_at
    assert (start.incarnation, start.metadata) == (session.incarnation, {"tenant": "t-1"})
    send = await store.get_send("s", 0)
    assert (send.status, send.request_key, send.first_seq) == ("pending", "k", 1)
    assert [(m.seq, m.send_index) for m in await store.read_messages("s")] == [(0, 0), (1, 0)]


async def test_begin_send_on_a_held_session_is_busy_and_writes_nothing(store: Store) -> None:
    await store.create_session("s")
    await store.acquire_lease("s", "other", ttl=30)
    before = await store.get_session("s")

    with pytest.raises(SessionBusyError) as info:
        await store.begin_send("s", [message("q")], owner="loop-1", ttl=30)

    assert info.value.code == "session_busy" and info.value.holder == "other"
    assert await store.get_session("s") == before
    assert await count_rows(store, "sends") == 0


async def test_begin_send_with_a_pending_send_leaves_the_lease_free(store: Store) -> None:
    await store.create_session("s")
    await store.start_send("s", [message("q")])
    before = await store.get_session("s")

    with pytest.raises(SendPendingError) as info:
        await store.begin_send("s", [message("q2")], owner="loop-1", ttl=30)

    assert info.value.code == "send_pending" and info.value.send_index == 0
    assert await store.get_session("s") == before


async def test_begin_send_with_a_used_request_key_returns_it_untouched(store: Store) -> None:
    await store.create_session("s")
    first = await store.begin_send("s", [message("q")], owner="loop-1", ttl=30,
                                   request_key="k")
    assert first.lease is not None
    await store.finish_send("s", first.send_index, release=first.lease)
    before = await store.get_session("s")

    again = await store.begin_send("s", [message("other")], owner="loop-2", ttl=30,
                                   request_key="k")

    assert again.lease is None and again.existing is not None
    assert (again.existing.send_index, again.existing.status) == (0, "done")
    assert await store.get_session("s") == before


async def test_begin_send_takes_over_an_expired_lease(store: Store) -> None:
    await store.create_session("s")
    old = await store.acquire_lease("s", "crashed", ttl=0.2)
    await past(store, old.expires_at)

    start = await store.begin_send("s", [message("q")], owner="loop-1", ttl=30)

    assert start.lease is not None and start.lease.epoch == old.epoch + 1
    with pytest.raises(LeaseLostError):
        await store.append_messages("s", [message("late")], epoch=old.epoch)


async def test_finish_with_release_frees_the_session_in_one_step(store: Store) -> None:
    await store.create_session("s")
    start = await store.begin_send("s", [message("q")], owner="loop-1", ttl=30)
    assert start.lease is not None

    done = await store.finish_send("s", start.send_index, [message("a", role="assistant")],
                                   release=start.lease, usage={"input_tokens": 3})

    assert (done.status, done.usage) == ("done", {"input_tokens": 3})
    session = await store.get_session("s")
    assert (session.lease_owner, session.lease_expires_at, session.pending_send) == (
        None, None, None)
    assert (await store.acquire_lease("s", "loop-2", ttl=30)).epoch == start.lease.epoch + 1


async def test_finish_with_a_stale_lease_leaves_the_new_holder_alone(store: Store) -> None:
    await store.create_session("s")
    start = await store.begin_send("s", [message("q")], owner="loop-1", ttl=0.2)
    assert start.lease is not None
    await past(store, start.lease.expires_at)
    claim = await store.claim_session("s", owner="loop-2", ttl=30)
    before = await store.get_session("s")

    with pytest.raises(LeaseLostError) as info:
        await store.finish_send("s", 0, [message("stale", role="assistant")],
                                release=start.lease)

    assert info.value.code == "lease_lost"
    assert await store.get_session("s") == before
    assert (claim.pending_send, claim.lease.epoch) == (0, start.lease.epoch + 1)


async def test_pause_keeps_partial_output_and_a_claim_resumes_it(store: Store) -> None:
    await store.create_session("s", system_prompt="sys")
    start = await store.begin_send("s", [message("q")], owner="loop-1", ttl=30)
    assert start.lease is not None

    first_new = await store.pause_send("s", 0, [message("partial", role="assistant")],
                                       lease=start.lease, error={"type": "Timeout"})

    assert first_new == 1
    send = await store.get_send("s", 0)
    assert (send.status, send.error, send.finished_at) == ("pending", {"type": "Timeout"}, None)
    session = await store.get_session("s")
    assert (session.lease_owner, session.pending_send, session.next_seq) == (None, 0, 2)
    claim = await store.claim_session("s", owner="worker", ttl=30)
    assert (claim.pending_send, claim.next_seq, claim.system_prompt) == (0, 2, "sys")
    assert (claim.incarnation, claim.metadata) == (session.incarnation, {})
    assert claim.lease.epoch == start.lease.epoch + 1
    with pytest.raises(SessionBusyError):
        await store.claim_session("s", owner="another", ttl=30)
    done = await store.finish_send("s", 0, [message("a", role="assistant")],
                                   release=claim.lease)
    assert (done.status, done.first_seq) == ("done", 0)


async def test_pause_with_a_stale_lease_writes_nothing(store: Store) -> None:
    await store.create_session("s")
    start = await store.begin_send("s", [message("q")], owner="loop-1", ttl=0.2)
    assert start.lease is not None
    await past(store, start.lease.expires_at)
    await store.claim_session("s", owner="worker", ttl=30)
    before = await store.get_session("s")

    with pytest.raises(LeaseLostError):
        await store.pause_send("s", 0, [message("stale")], lease=start.lease, error={"e": 1})

    assert await store.get_session("s") == before
    assert (await store.get_send("s", 0)).error is None


async def test_append_can_extend_the_lease(store: Store) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "loop-1", ttl=5)

    await store.append_messages("s", [message("a")], epoch=lease.epoch, extend_lease=600)

    session = await store.get_session("s")
    assert session.lease_expires_at is not None and session.lease_expires_at > lease.expires_at
    assert (session.lease_owner, session.lease_epoch) == ("loop-1", lease.epoch)
    with pytest.raises(InvalidArgumentError):
        await store.append_messages("s", [message("b")], extend_lease=600)
    assert await store.next_seq("s") == 1


FencedWrite = Callable[[Store, Lease], Awaitable[object]]
_FENCED_WRITES: dict[str, FencedWrite] = {
    "append": lambda s, lease: s.append_messages("s", [message("a")], epoch=lease.epoch),
    "append_extending": lambda s, lease: s.append_messages(
        "s", [message("a")], epoch=lease.epoch, extend_lease=600),
    "start_send": lambda s, lease: s.start_send("s", [message("q")], epoch=lease.epoch),
    "finish_send": lambda s, lease: s.finish_send(
        "s", 0, [message("a", role="assistant")], epoch=lease.epoch),
    "finish_send_release": lambda s, lease: s.finish_send(
        "s", 0, [message("a", role="assistant")], release=lease),
    "pause_send": lambda s, lease: s.pause_send(
        "s", 0, [message("p", role="assistant")], lease=lease, error={"e": 1}),
    "renew_lease": lambda s, lease: s.renew_lease(lease, ttl=600),
}
_NEED_A_PENDING_SEND = {"finish_send", "finish_send_release", "pause_send"}


@pytest.mark.parametrize("write", sorted(_FENCED_WRITES))
async def test_a_released_lease_fences_every_write(store: Store, write: str) -> None:
    await store.create_session("s")
    lease = await store.acquire_lease("s", "loop-1", ttl=30)
    if write in _NEED_A_PENDING_SEND:
        await store.start_send("s", [message("q")], epoch=lease.epoch)
    assert await store.release_lease(lease) is True
    before = await store.get_session("s")
    sends = await store.list_sends("s")

    with pytest.raises(LeaseLostError) as info:
        await _FENCED_WRITES[write](store, lease)

    assert info.value.code == "lease_lost"
    assert (info.value.session_id, info.value.epoch) == ("s", lease.epoch)
    session = await store.get_session("s")
    assert session == before
    assert (session.lease_owner, session.lease_expires_at) == (None, None)
    assert await store.list_sends("s") == sends
    assert await count_rows(store, "messages") == before.next_seq
    # The next holder gets a new epoch, and the released one stays fenced out.
    again = await store.acquire_lease("s", "loop-1", ttl=30)
    assert again.epoch == lease.epoch + 1
    with pytest.raises(LeaseLostError):
        await store.append_messages("s", [message("late")], epoch=lease.epoch)
