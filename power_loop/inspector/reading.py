"""What the inspector reads, and nothing else: a read-only view of a store.

:class:`Reader` holds the store privately and offers only reads, each one a read
transaction of the store's (PostgreSQL and MySQL run them ``READ ONLY``, SQLite on its
``query_only`` reader connections), so no page of the inspector can write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from power_loop.events.feed import watch
from power_loop.store import Store
from power_loop.store.children import SessionLink, SessionTree
from power_loop.store.context_ops import FoldRecord, NoteRecord
from power_loop.store.feed import FeedItem
from power_loop.store.records import SendRecord, SessionRecord
from power_loop.store.session_search import session_search
from power_loop.store.usage import SessionUsage, usage_reader
from power_loop.store.waits import WaitRecord, waits_of
from power_loop.timers.records import TimerRecord
from power_loop.workflows._journal import Journal, StepRecord, WorkflowRecord

MAX_ITEMS = 2000
"""The most timeline items one page shows (the newest are left out beyond it)."""
MAX_WAIT_SENDS = 50
"""The sends whose waits are read (the newest ones)."""


@dataclass(frozen=True, slots=True)
class SessionView:
    """Everything a session's page shows, read when the page is asked for."""

    session: SessionRecord
    link: SessionLink | None
    items: list[FeedItem]
    cursor: str | None
    complete: bool
    sends: list[SendRecord]
    waits: dict[int, list[WaitRecord]]
    projections: dict[int, tuple[int, Mapping[str, Any]]]
    folds: list[FoldRecord]
    notes: list[NoteRecord]
    usage: SessionUsage
    timers: list[TimerRecord]


class Reader:
    """The store, for reading only."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def backend(self) -> str:
        return self._store.backend

    async def sessions(self, *, state: str | None, text: str | None,
                       limit: int) -> list[SessionRecord]:
        return await session_search(self._store).find(state=state, text=text, limit=limit)

    async def session(self, session_id: str) -> SessionView:
        store = self._store
        record = await store.get_session(session_id)
        items: list[FeedItem] = []
        complete = True
        async with aclosing(watch(store, session_id, follow=False)) as feed:
            async for item in feed:
                if len(items) >= MAX_ITEMS:
                    complete = False
                    break
                items.append(item)
        sends = await store.list_sends(session_id)
        waits: dict[int, list[WaitRecord]] = {}
        for send in sends[-MAX_WAIT_SENDS:]:
            found = await waits_of(store).of_send_index(session_id, send.send_index)
            if found:
                waits[send.send_index] = found
        return SessionView(
            session=record, link=await store.get_session_link(session_id), items=items,
            cursor=items[-1].cursor if items else None, complete=complete, sends=sends,
            waits=waits,
            projections=await store.read_projections(session_id, 0, record.send_count),
            folds=await store.list_folds(session_id), notes=await store.list_notes(session_id),
            usage=await usage_reader(store).usage(session_id),
            timers=await store.list_timers(session_id, limit=200))

    async def tree(self, session_id: str) -> SessionTree:
        return await self._store.session_tree(session_id)

    async def root_of(self, session_id: str) -> str:
        """The session at the top of ``session_id``'s tree."""
        seen = {session_id}
        current = session_id
        while True:
            link = await self._store.get_session_link(current)
            if link is None or link.parent_id in seen:
                return current
            current = link.parent_id
            seen.add(current)

    async def timers(self, *, status: str | None, limit: int) -> list[TimerRecord]:
        return await self._store.list_timers(status=status, limit=limit)

    async def parked(self, *, limit: int) -> list[SessionRecord]:
        return await self._store.list_parked_sessions(limit=limit)

    async def workflows(self, *, limit: int) -> list[WorkflowRecord]:
        return await Journal(self._store).recent(limit)

    async def workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepRecord]]:
        journal = Journal(self._store)
        record = await journal.load(workflow_id)
        return record, list((await journal.steps(workflow_id)).values())

    def follow(self, session_id: str, after: str | None) -> AsyncIterator[FeedItem]:
        """What the session commits after the cursor ``after``, as it commits it."""
        return watch(self._store, session_id, after=after, poll=(0.1, 1.0))

    async def session_exists(self, session_id: str) -> None:
        """Raises :class:`~power_loop.errors.SessionNotFoundError` when it does not."""
        await self._store.get_session(session_id)
