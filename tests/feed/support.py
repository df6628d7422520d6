"""What the feed of a session must be, derived independently from the store's rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

from power_loop import FeedItem, FeedMessage, FeedSend, StatefulAgentLoop, Store

Key = tuple[str, int, object]
"""An item as (kind, send index, seq for a message or status for a send)."""


def key(item: FeedItem) -> Key:
    if isinstance(item, FeedMessage):
        return ("message", item.send_index, item.seq)
    assert isinstance(item, FeedSend)
    return ("send", item.send_index, item.status)


async def expected_keys(store: Store, session_id: str) -> list[Key]:
    """Each send's start, its messages in seq order, its end if it ended: from the rows."""
    keys: list[Key] = []
    messages = await store.read_messages(session_id)
    for send in await store.list_sends(session_id):
        keys.append(("send", send.send_index, "pending"))
        keys.extend(("message", m.send_index, m.seq) for m in messages
                    if m.send_index == send.send_index)
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
