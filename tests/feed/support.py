"""What the feed of a session must be, derived independently from the store's rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

from power_loop import FeedItem, FeedMessage, FeedSend, FeedWait, StatefulAgentLoop, Store
from power_loop.llm.messages import decode_message
from power_loop.store.waits import FEED_KINDS, wait_id_for, waits_of

Key = tuple[str, int, object]
"""An item as (kind, send index, seq for a message, status for a send, or
``call id:status`` for a wait)."""


def key(item: FeedItem) -> Key:
    if isinstance(item, FeedMessage):
        return ("message", item.send_index, item.seq)
    if isinstance(item, FeedWait):
        return ("wait", item.send_index, f"{item.wait_id}:{item.status}")
    assert isinstance(item, FeedSend)
    return ("send", item.send_index, item.status)


async def expected_keys(store: Store, session_id: str) -> list[Key]:
    """Each send's start, its messages in seq order, its end if it ended: from the rows.

    A round's waits (approvals, questions) open right after the assistant message whose
    calls they are, in the calls' order, and are decided, in the order of their
    decisions, before the next message: while a send waits, nothing else is appended.
    """
    keys: list[Key] = []
    messages = await store.read_messages(session_id)
    for send in await store.list_sends(session_id):
        keys.append(("send", send.send_index, "pending"))
        waits = {w.wait_id: w for w in await waits_of(store).of_send_index(
            session_id, send.send_index) if w.kind in FEED_KINDS}
        for m in messages:
            if m.send_index != send.send_index:
                continue
            keys.append(("message", m.send_index, m.seq))
            calls = decode_message(m.role, m.body).tool_calls
            round_ = [waits[i] for i in (wait_id_for(c.id) for c in calls) if i in waits]
            keys.extend(("wait", w.send_index, f"{w.wait_id}:waiting") for w in round_)
            decided = sorted((w for w in round_ if w.status != "waiting"),
                             key=lambda w: (w.decided_at, w.wait_id))
            keys.extend(("wait", w.send_index, f"{w.wait_id}:"
                         f"{'approved' if w.status in ('executing', 'done') else w.status}")
                        for w in decided)
        if send.status != "pending":
            keys.append(("send", send.send_index, send.status))
    return keys


async def collect(items: AsyncIterator[FeedItem], *, until_finished: int | None = None,
                  ) -> list[FeedItem]:
    """The items, up to the end of send ``until_finished`` (or to the end of the feed)."""
    got: list[FeedItem] = []
    async for item in items:
        got.append(item)
        if (until_finished is not None and isinstance(item, FeedSend)
                and item.send_index == until_finished and item.finished):
            break
    return got


async def read_all(loop: StatefulAgentLoop, session_id: str, after: str | None = None,
                   ) -> list[FeedItem]:
    return await collect(loop.watch(session_id, after=after, follow=False))
