"""The loop's observing methods: token accounting and the session feed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from power_loop.events.feed import DEFAULT_POLL, watch
from power_loop.store.feed import FeedItem
from power_loop.store.usage import SessionUsage, usage_reader

if TYPE_CHECKING:
    from power_loop.store.store import Store


class ObservingMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`."""

    _get_store: Callable[[], Awaitable[Store]]

    async def usage(self, session_id: str, *, descendants: bool = True) -> SessionUsage:
        """What the session spent, as stored: per send, its folds, and its sub-sessions.

        Read from the store, so any process reports the same. ``total`` and
        ``model_calls`` include every descendant session (sessions whose ``parent_id``
        leads here: sub-agents); ``own`` is this session's alone. Pass a
        :class:`~power_loop.PriceTable` to ``cost()`` for money.

        Raises:
            SessionNotFoundError: no such session.
        """
        return await usage_reader(await self._get_store()).usage(
            session_id, descendants=descendants)

    async def watch(self, session_id: str, *, after: str | None = None, follow: bool = True,
                    poll: tuple[float, float] = DEFAULT_POLL,
                    ) -> AsyncGenerator[FeedItem, None]:
        """What the session commits, in order, from any process: its messages and its
        sends' starts and ends.

        Each item carries a ``cursor``; pass the last one a client saw as ``after`` (in
        this process or any other, after a restart) and the feed goes on exactly after
        it: nothing missed, nothing twice. Only what is committed appears: the text of
        an answer still streaming is in :meth:`stream`, in the process running it.

        Args:
            after: A cursor from an earlier item, or ``None`` for the beginning.
            follow: Wait for more (the default); ``False`` stops at the end of what is
                committed now.
            poll: Seconds between polls where the engine cannot notify (SQLite, MySQL):
                the first wait after a change, and the longest it doubles up to while
                nothing changes. On PostgreSQL a commit wakes the feed at once; it polls
                at the longest interval only as a safety net.

        Raises:
            InvalidArgumentError: ``after`` is not a cursor of this session, or ``poll``
                is out of range.
            SessionNotFoundError: the session does not exist, or was deleted (or
                replaced by an import) while being watched.
        """
        store = await self._get_store()
        async with aclosing(watch(store, session_id, after=after, follow=follow,
                                  poll=poll)) as items:
            async for item in items:
                yield item
