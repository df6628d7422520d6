"""Finding sessions by state and by text: ``session_search(store).find(...)``.

A read for operators (the session inspector, ``power-loop inspect``): the sessions with a
send in progress, those whose send waits on a person, those workers parked, and a
substring of the id or of the metadata's JSON text. Newest first, as
:meth:`~power_loop.Store.list_sessions` lists them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError
from power_loop.store.port import Connection, Row
from power_loop.store.records import SessionRecord
from power_loop.store.statements import SESSION_COLUMNS, session_from_row

if TYPE_CHECKING:
    from power_loop.store.store import Store

SESSION_STATES = ("pending", "waiting", "parked")
"""What :meth:`SessionSearch.find` filters on: ``pending`` (a send in progress, whatever
it waits for), ``waiting`` (that send waits on an approval or an answer) and ``parked``
(workers gave up resuming it)."""
MAX_SEARCH_CHARS = 200
"""The longest search text accepted."""
_ESCAPE = "!"  # not a backslash: MySQL and PostgreSQL would read it differently


def _like(text: str) -> str:
    escaped = "".join(f"{_ESCAPE}{c}" if c in f"%_{_ESCAPE}" else c for c in text)
    return f"%{escaped}%"


class SessionSearch:
    """The session search of one store (statements rendered once)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        names = store._names
        self._render = store._database.dialect.render
        s, w = names.sessions, names.waits
        self._from = f"SELECT {SESSION_COLUMNS} FROM {s} AS s"
        self._states = {
            "pending": "s.pending_send IS NOT NULL",
            "waiting": (f"s.pending_send IS NOT NULL AND EXISTS (SELECT 1 FROM {w} AS w "
                        "WHERE w.session_id = s.id AND w.send_index = s.pending_send AND "
                        "w.status = 'waiting')"),
            "parked": "s.pending_send IS NOT NULL AND s.parked_at IS NOT NULL",
        }
        self._text = (f"(s.id LIKE ? ESCAPE '{_ESCAPE}' OR "
                      f"s.metadata LIKE ? ESCAPE '{_ESCAPE}')")
        self._cache: dict[tuple[str | None, bool], str] = {}

    def _sql(self, state: str | None, text: bool) -> str:
        key = (state, text)
        found = self._cache.get(key)
        if found is None:
            where = [c for c in (self._states.get(state or ""), self._text if text else None)
                     if c]
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            found = self._cache[key] = self._render(
                f"{self._from}{clause} ORDER BY s.created_at DESC, s.id DESC LIMIT ?")
        return found

    async def find(self, *, state: str | None = None, text: str | None = None,
                   limit: int = 50) -> list[SessionRecord]:
        """Sessions in ``state`` whose id or metadata holds ``text``, newest first.

        Args:
            state: One of :data:`SESSION_STATES`, or ``None`` for any.
            text: A substring of the id or of the metadata's JSON text (``%`` and ``_``
                are plain characters); ``None`` or empty for any. Letter case follows
                the engine: SQLite and MySQL ignore ASCII case, PostgreSQL does not.
            limit: At most this many.

        Raises:
            InvalidArgumentError: an unknown state, a text too long, or ``limit < 1``.
        """
        if state is not None and state not in SESSION_STATES:
            raise InvalidArgumentError(
                f"unknown session state {state!r}; choose from {', '.join(SESSION_STATES)}")
        if text is not None and not isinstance(text, str):
            raise InvalidArgumentError("the search text must be a string")
        if text is not None and len(text) > MAX_SEARCH_CHARS:
            raise InvalidArgumentError(
                f"the search text is {len(text)} characters; search for at most "
                f"{MAX_SEARCH_CHARS}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError("limit must be an integer of at least 1")
        args: list[Any] = [_like(text)] * 2 if text else []
        rows = await self._store._read(_all, self._sql(state, bool(text)), [*args, limit])
        return [session_from_row(r) for r in rows]


_BY_STORE: weakref.WeakKeyDictionary[Any, SessionSearch] = weakref.WeakKeyDictionary()


def session_search(store: Store) -> SessionSearch:
    """The session search of ``store``."""
    found = _BY_STORE.get(store)
    if found is None:
        found = _BY_STORE[store] = SessionSearch(store)
    return found


async def _all(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)
