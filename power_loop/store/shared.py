"""Stores shared by the loops of one process that name the same DSN.

``StatefulAgentLoop(dsn=...)`` does not open a store of its own: it acquires the
process's store for ``(dsn, table_prefix, schema)`` *in the running event loop* and
releases it when it closes; the last release closes the store. Connections belong to
the event loop that opened them, so each event loop gets its own store, and a store is
never handed to another loop.

Two things outlive the store's close, so that a loop per request stays cheap even when
requests do not overlap:

* the schema check: once the tables were found (or made) current, later opens of the
  same DSN and prefix in this process skip it (an in-memory SQLite database is always
  checked: each open is a new database);
* the window cache: the sessions' rendered histories, kept for the last few DSNs. It is
  validated against the store at every send, so a cache that outlived its store is as
  safe as a warm one.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from power_loop.store.dsn import parse_dsn
from power_loop.store.migrations import SchemaPolicy
from power_loop.store.store import Store, open_store
from power_loop.store.window_cache import WindowCache

KEPT_CACHES = 8
"""Window caches kept for DSNs no loop holds open (least recently used dropped)."""

_Key = tuple[str, str, SchemaPolicy, asyncio.AbstractEventLoop]


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    store: Store | None = None
    refs: int = 0


_guard = threading.Lock()
_entries: dict[_Key, _Entry] = {}
_schema_ready: set[tuple[str, str]] = set()
_caches: OrderedDict[tuple[str, str], WindowCache[Any]] = OrderedDict()


def _is_memory(dsn: str) -> bool:
    try:
        return parse_dsn(dsn).location == ":memory:"
    except Exception:  # a bad DSN is reported by open_store itself, with its message
        return True


def _cache_for(dsn: str, prefix: str) -> WindowCache[Any]:
    with _guard:
        cache = _caches.pop((dsn, prefix), None) or WindowCache()
        _caches[(dsn, prefix)] = cache
        while len(_caches) > KEPT_CACHES:
            _caches.popitem(last=False)
        return cache


async def _open(dsn: str, prefix: str, schema: SchemaPolicy) -> Store:
    known = (dsn, prefix)
    ready = schema is not SchemaPolicy.NONE and known in _schema_ready
    store = await open_store(dsn, table_prefix=prefix,
                             schema=SchemaPolicy.NONE if ready else schema)
    if schema is not SchemaPolicy.NONE and not _is_memory(dsn):
        with _guard:
            _schema_ready.add(known)
    store._cache = _cache_for(dsn, prefix)
    return store


async def acquire_store(dsn: str, *, table_prefix: str = "pl_",
                        schema: SchemaPolicy = SchemaPolicy.AUTO_CREATE) -> Store:
    """The process's store for ``dsn`` in the running event loop (opened if needed).

    Every call must be paired with :func:`release_store`.
    """
    key = (dsn, table_prefix, schema, asyncio.get_running_loop())
    with _guard:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry()
        entry.refs += 1
    try:
        async with entry.lock:
            if entry.store is None:
                entry.store = await _open(dsn, table_prefix, schema)
            return entry.store
    except BaseException:
        with _guard:
            entry.refs -= 1
            if entry.refs == 0 and _entries.get(key) is entry:
                del _entries[key]
        raise


async def release_store(store: Store) -> None:
    """Give back a store from :func:`acquire_store`; the last release closes it."""
    with _guard:
        for key, entry in _entries.items():
            if entry.store is store:
                entry.refs -= 1
                if entry.refs > 0:
                    return
                del _entries[key]
                break
    await store.aclose()


def shared_stores() -> int:
    """How many shared stores are open now, in every event loop (for tests and checks)."""
    with _guard:
        return sum(1 for entry in _entries.values() if entry.store is not None)


def forget_schema(table_prefix: str) -> None:
    """Check the schema again at the next open of any DSN with ``table_prefix`` (after
    its tables were dropped)."""
    with _guard:
        _schema_ready.difference_update({k for k in _schema_ready if k[1] == table_prefix})
        for key in [k for k in _caches if k[1] == table_prefix]:
            del _caches[key]
