"""Token accounting: what a session's sends and folds spent, and its sub-sessions'.

Nothing new is written: a send's ``token_usage`` (stored by its final write) and a
fold's (stored when it is done) are summed, in one read snapshot, from any process.

A send's stored usage may include what its sub-agents spent (the sub-agent tool stores
that part under ``children``): a session's *own* usage leaves it out, because those
tokens belong to the child sessions, and :attr:`SessionUsage.total` adds the child
sessions in, so nothing is counted twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from power_loop.llm.messages import Usage
from power_loop.llm.pricing import PriceTable
from power_loop.store.core import not_found
from power_loop.store.port import Connection
from power_loop.store.records import check_id, load_json

if TYPE_CHECKING:
    from power_loop.store.store import Store

MAX_DESCENDANTS = 100_000
"""The most sub-sessions one report walks (a guard against a runaway tree)."""
MAX_DEPTH = 200
"""The deepest sub-session one report walks."""


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(max(a.input_tokens - b.input_tokens, 0),
                 max(a.output_tokens - b.output_tokens, 0),
                 max(a.cache_read_tokens - b.cache_read_tokens, 0),
                 max(a.cache_write_tokens - b.cache_write_tokens, 0))


def _add_models(into: dict[str, Usage], more: Mapping[str, Usage]) -> None:
    for model, usage in more.items():
        into[model] = into.get(model, Usage()) + usage


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class SendUsage:
    """What one send spent itself (its sub-agents' part excluded).

    Attributes:
        send_index: The send.
        status: Its status (``pending`` sends have stored nothing yet: zero).
        usage: Tokens of its own model calls.
        model_calls: Its model calls that reported usage.
        by_model: ``usage`` by model name (``""``: not recorded).
    """

    send_index: int
    status: str
    usage: Usage
    model_calls: int
    by_model: Mapping[str, Usage]

    def cost(self, prices: PriceTable) -> Decimal:
        """The send's cost at ``prices`` (see :meth:`PriceTable.cost`)."""
        return prices.cost(self.by_model)


@dataclass(frozen=True, slots=True)
class SessionUsage:
    """A session's token accounting, with its sub-sessions'.

    Attributes:
        session_id: The session.
        own: Tokens of this session's own sends and folds.
        own_model_calls: Their model calls.
        sends: Each send's own usage, in order.
        folds: Tokens of the folds that completed (a failed fold stores none).
        fold_calls: Their model calls.
        children: The same report for each child session (``parent_id`` = this one).
    """

    session_id: str
    own: Usage
    own_model_calls: int
    sends: tuple[SendUsage, ...]
    folds: Usage
    fold_calls: int
    own_by_model: Mapping[str, Usage] = field(default_factory=dict)
    children: tuple[SessionUsage, ...] = ()

    @property
    def total(self) -> Usage:
        """This session's tokens and all its descendants'."""
        return sum((c.total for c in self.children), self.own)

    @property
    def model_calls(self) -> int:
        """This session's model calls and all its descendants'."""
        return self.own_model_calls + sum(c.model_calls for c in self.children)

    @property
    def by_model(self) -> dict[str, Usage]:
        """:attr:`total` by model name (``""``: not recorded)."""
        found = dict(self.own_by_model)
        for child in self.children:
            _add_models(found, child.by_model)
        return found

    def cost(self, prices: PriceTable, *, descendants: bool = True) -> Decimal:
        """The exact cost at ``prices``, with the sub-sessions' unless told not to.

        Raises:
            InvalidArgumentError: some tokens have no price in ``prices``.
        """
        return prices.cost(self.by_model if descendants else self.own_by_model)


def send_usage_of(send_index: int, status: str, rounds: int,
                  stored: Mapping[str, Any]) -> SendUsage:
    """A send's own usage, from its stored ``token_usage``."""
    total = Usage.from_json(stored)
    children = stored.get("children")
    own = _minus(total, Usage.from_json(children)) if isinstance(children, Mapping) else total
    calls = _count(stored["model_calls"]) if "model_calls" in stored else rounds
    models = stored.get("models")
    by_model: dict[str, Usage] = {}
    if isinstance(models, Mapping):
        for name, data in models.items():
            if isinstance(name, str) and isinstance(data, Mapping):
                _add_models(by_model, {name: Usage.from_json(data)})
    attributed = sum(by_model.values(), Usage())
    rest = _minus(own, attributed)
    if rest.total_tokens:  # older rows: tokens of no recorded model
        _add_models(by_model, {"": rest})
    return SendUsage(send_index, status, own, calls, by_model)


class UsageReader:
    """The accounting SQL for one store, rendered once (see :func:`usage_reader`)."""

    def __init__(self, store: Store) -> None:
        d, n = store._database.dialect, store._names
        r = d.render
        self._store = store
        self.exists = r(f"SELECT 1 FROM {n.sessions} WHERE id = ?")
        self.sends = r(f"SELECT send_index, status, rounds, token_usage FROM {n.sends} "
                       "WHERE session_id = ? ORDER BY send_index")
        self.folds = r(f"SELECT token_usage FROM {n.folds} WHERE session_id = ? "
                       "AND status = 'done'")
        self.children = r(f"SELECT id FROM {n.sessions} WHERE parent_id = ? ORDER BY id")

    async def usage(self, session_id: str, *, descendants: bool = True) -> SessionUsage:
        """The session's accounting, from one snapshot.

        Raises:
            SessionNotFoundError: no such session.
        """
        return await self._store._read(self._usage_txn, check_id(session_id), descendants)

    async def _usage_txn(self, conn: Connection, session_id: str,
                         descendants: bool) -> SessionUsage:
        if await conn.fetchone(self.exists, [session_id]) is None:
            raise not_found(session_id)
        seen = {session_id}
        return await self._one(conn, session_id, MAX_DEPTH if descendants else 0, seen)

    async def _one(self, conn: Connection, session_id: str, depth: int,
                   seen: set[str]) -> SessionUsage:
        sends = tuple(send_usage_of(int(r[0]), r[1], int(r[2]), _mapping(r[3]))
                      for r in await conn.fetch(self.sends, [session_id]))
        folds, fold_calls = Usage(), 0
        for (stored,) in await conn.fetch(self.folds, [session_id]):
            data = _mapping(stored)
            folds = folds + Usage.from_json(data)
            fold_calls += _count(data.get("calls"))
        by_model: dict[str, Usage] = {}
        for send in sends:
            _add_models(by_model, send.by_model)
        if folds.total_tokens:
            _add_models(by_model, {"": folds})
        own = sum((s.usage for s in sends), folds)
        children: list[SessionUsage] = []
        if depth > 0:
            for (child,) in await conn.fetch(self.children, [session_id]):
                if child in seen or len(seen) >= MAX_DESCENDANTS:
                    continue  # a cycle written by hand, or a runaway tree
                seen.add(child)
                children.append(await self._one(conn, child, depth - 1, seen))
        return SessionUsage(session_id, own, sum(s.model_calls for s in sends) + fold_calls,
                            sends, folds, fold_calls, by_model, tuple(children))


def _mapping(text: str) -> Mapping[str, Any]:
    data = load_json(text)
    return data if isinstance(data, Mapping) else {}


_READERS: weakref.WeakKeyDictionary[Store, UsageReader] = weakref.WeakKeyDictionary()


def usage_reader(store: Store) -> UsageReader:
    """The store's accounting reader (its statements are rendered once per store)."""
    reader = _READERS.get(store)
    if reader is None:
        reader = _READERS[store] = UsageReader(store)
    return reader

