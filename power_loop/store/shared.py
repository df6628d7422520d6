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
import weakref
from collections import OrderedDict
from typing import Any

from power_loop.store.dsn import parse_dsn
from power_loop.store.migrations import SchemaPolicy
from power_loop.store.store import Store, open_store
from power_loop.store.window_cache import WindowCache

KEPT_CACHES = 8
"""Window caches kept for DSNs no loop holds open (least recently used dropped)."""

_Key = tuple[str, str, SchemaPolicy, asyncio.AbstractEventLoop]

_guard = threading.Lock()
# Weak: a store every loop dropped unclosed is collected, and warns as any unclosed
# store does (power_loop/store/unclosed.py), instead of living here for ever.
_stores: dict[_Key, weakref.ref[Store]] = {}
_refs: weakref.WeakKeyDictionary[Store, int] = weakref.WeakKeyDictionary()
_locks: dict[_Key, asyncio.Lock] = {}
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
        for dead in [k for k, ref in _stores.items() if ref() is None]:
            del _stores[dead]
            _locks.pop(dead, None)
        lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        ref = _stores.get(key)
        store = ref() if ref is not None else None
        if store is None:
            store = await _open(dsn, table_prefix, schema)
            with _guard:
                _stores[key] = weakref.ref(store)
        with _guard:
            _refs[store] = _refs.get(store, 0) + 1
        return store


async def release_store(store: Store) -> None:
    """Give back a store from :func:`acquire_store`; the last release closes it."""
    with _guard:
        left = _refs.get(store, 0) - 1
        if left > 0:
            _refs[store] = left
            return
        _refs.pop(store, None)
        for key in [k for k, ref in _stores.items() if ref() is store]:
            del _stores[key]
    await store.aclose()


def shared_stores() -> int:
    """How many shared stores are open now, in every event loop (for tests and checks)."""
    with _guard:
        return sum(1 for ref in _stores.values() if ref() is not None)


def forget_schema(table_prefix: str) -> None:
    """Check the schema again at the next open of any DSN with ``table_prefix`` (after
    its tables were dropped)."""
    with _guard:
        _schema_ready.difference_update({k for k in _schema_ready if k[1] == table_prefix})
        for key in [k for k in _caches if k[1] == table_prefix]:
            del _caches[key]
