"""``watch``: follow what a session commits, from any process, resumable from a cursor.

The order and the cursors come from :mod:`power_loop.store.feed`; this module waits for
more. Where the engine notifies other processes (PostgreSQL: a trigger on the sessions
table sends a ``NOTIFY`` in the transaction that appends messages or opens or closes a
send), a watcher sleeps until it is told, with a long poll as a safety net. Elsewhere it
polls, from ``poll_min`` seconds, doubling while nothing comes, up to ``poll_max``.

Every watcher of one store object shares one subscription (one connection).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from power_loop.errors import InvalidArgumentError, PowerLoopError
from power_loop.store.feed import FeedItem, feed_reader
from power_loop.store.port import Listener, Notifying
from power_loop.store.store import Store

DEFAULT_POLL = (0.05, 2.0)
"""Seconds between polls: the first wait, and the longest one it doubles up to."""
MAX_POLL = 3600.0
BATCH = 200
"""Messages read per query; a reader far behind catches up in batches of this size."""


def feed_channel(store: Store) -> str:
    """The notification channel of this store's session feed (its prefix + ``feed``)."""
    return f"{store.table_prefix}feed"


@dataclass
class _Hub:
    """One store's subscription, shared by its watchers: session id -> their events."""

    listener: Listener | None = None
    watchers: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def heard(self, payload: str) -> None:
        for event in self.watchers.get(payload, ()):
            event.set()

    def lost(self) -> None:
        for events in self.watchers.values():
            for event in events:
                event.set()  # read now; then poll until a new subscription is made


_HUBS: weakref.WeakKeyDictionary[Store, _Hub] = weakref.WeakKeyDictionary()


async def _subscribe(store: Store, hub: _Hub) -> None:
    """Make sure the hub listens, if the engine can notify (a failure means polling)."""
    database = store._database
    if database.dialect.notify_sql is None or not isinstance(database, Notifying):
        return
    async with hub.lock:
        if hub.listener is not None and hub.listener.alive():
            return
        if hub.listener is not None:
            await hub.listener.close()
            hub.listener = None
        hub.listener = await database.listen(feed_channel(store), hub.heard, hub.lost)


def _check_poll(poll: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in poll)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"poll must be (min_seconds, max_seconds), not {poll!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high <= MAX_POLL):
        raise InvalidArgumentError(
            f"poll {poll!r} must be two numbers of seconds with 0 < min <= max <= "
            f"{MAX_POLL:.0f}")
    return low, high


async def watch(store: Store, session_id: str, *, after: str | None = None,
                follow: bool = True,
                poll: tuple[float, float] = DEFAULT_POLL) -> AsyncGenerator[FeedItem, None]:
    """The items ``session_id`` committed after the cursor ``after`` (see
    :meth:`power_loop.StatefulAgentLoop.watch`)."""
    low, high = _check_poll(poll)
    reader = feed_reader(store)
    hub = _HUBS.get(store)
    if hub is None:
        hub = _HUBS[store] = _Hub()
    woken = asyncio.Event()
    hub.users += 1
    hub.watchers.setdefault(session_id, set()).add(woken)
    try:
        if follow:  # subscribed before the first read: nothing committed after it is missed
            await _subscribe(store, hub)
        position = await reader.start(session_id, after)
        interval = low
        while True:
            woken.clear()
            batch = await reader.read(session_id, position, BATCH)
            position = batch.position
            for item in batch.items:
                yield item
            if batch.more:
                continue
            if not follow:
                return
            if batch.items:
                interval = low
            notified = hub.listener is not None and hub.listener.alive()
            try:
                async with asyncio.timeout(high if notified else interval):
                    await woken.wait()
            except TimeoutError:
                pass
            if not batch.items and not notified:
                interval = min(interval * 2, high)
            if not notified and hub.listener is not None:
                try:  # the subscription was lost: make a new one, or go on polling
                    await _subscribe(store, hub)
                except PowerLoopError:
                    pass
    finally:
        events = hub.watchers.get(session_id)
        if events is not None:
            events.discard(woken)
            if not events:
                del hub.watchers[session_id]
        hub.users -= 1
        if hub.users == 0 and hub.listener is not None:
            listener, hub.listener = hub.listener, None
            await asyncio.shield(listener.close())
