"""Stores shared by the loops of one process that name the same DSN.

``StatefulAgentLoop(dsn=...)`` does not open a store of its own: it acquires the
process's store for ``(dsn, table_prefix, schema)`` *in the running event loop* and
releases it when it closes. Connections belong to the event loop that opened them, so
each event loop gets its own store, and a store is never handed to another loop.

After its last release a store stays open, idle, for a grace period (``grace``
seconds, :data:`DEFAULT_GRACE` unless the loop says otherwise), so that the next
request's loop finds it open: no connection is opened per request. It is closed when
the grace expires with no loop having taken it again, or when its event loop shuts
down (``asyncio.run`` cancels the waiting task, whose cancellation closes the store).
An idle store belongs to this registry: if the interpreter exits with one still open
(an event loop never shut down), its connections are released without the
"unclosed store" warning meant for stores a program forgot. A release from a task being
cancelled, or with ``grace=0``, closes the store at once.

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
import functools
import math
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from power_loop.errors import InvalidArgumentError
from power_loop.store.dsn import parse_dsn
from power_loop.store.migrations import SchemaPolicy
from power_loop.store.store import Store, open_store
from power_loop.store.unclosed import owned, release_now
from power_loop.store.window_cache import WindowCache

KEPT_CACHES = 8
"""Window caches kept for DSNs no loop holds open (least recently used dropped)."""
DEFAULT_GRACE = 30.0
"""Seconds a shared store stays open after its last loop released it."""

_Key = tuple[str, str, SchemaPolicy, asyncio.AbstractEventLoop]

_guard = threading.Lock()
# Weak: a store every loop dropped unclosed is collected, and warns as any unclosed
# store does (power_loop/store/unclosed.py), instead of living here for ever.
_stores: dict[_Key, weakref.ref[Store]] = {}
_refs: weakref.WeakKeyDictionary[Store, int] = weakref.WeakKeyDictionary()
_locks: dict[_Key, asyncio.Lock] = {}
_schema_ready: set[tuple[str, str]] = set()
_caches: OrderedDict[tuple[str, str], WindowCache[Any]] = OrderedDict()


@dataclass(eq=False)
class _Idle:
    """A store no loop holds, and the task that closes it when its grace expires (or
    when ``expire`` is set early)."""

    expire: asyncio.Future[None]
    task: asyncio.Task[None] | None = None
    reclaimed: bool = False


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Strong: the registry owns an idle store until it closes it.
_idle: dict[Store, _Idle] = {}


def check_grace(grace: float) -> float:
    """``grace`` as a number of seconds >= 0, or an :class:`InvalidArgumentError`."""
    if (not isinstance(grace, (int, float)) or isinstance(grace, bool) or math.isnan(grace)
            or grace < 0 or grace == math.inf):
        raise InvalidArgumentError(
            f"store_grace must be a finite number of seconds >= 0, not {grace!r}")
    return float(grace)


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


@functools.lru_cache(maxsize=64)
def _relative_file(dsn: str) -> bool:
    """Whether ``dsn`` names a SQLite file by a relative path."""
    try:
        parsed = parse_dsn(dsn)
    except Exception:  # a bad DSN is reported by open_store itself, with its message
        return False
    return (parsed.backend.name == "sqlite" and parsed.location != ":memory:"
            and not os.path.isabs(parsed.location))


def _named(dsn: str) -> str:
    """What the registry calls ``dsn``: a relative SQLite path is another file once the
    process changes directory, so the directory is part of its name."""
    return f"{dsn}\0{os.getcwd()}" if _relative_file(dsn) else dsn


async def _open(dsn: str, prefix: str, schema: SchemaPolicy) -> Store:
    known = (_named(dsn), prefix)
    ready = schema is not SchemaPolicy.NONE and known in _schema_ready
    store = await open_store(dsn, table_prefix=prefix,
                             schema=SchemaPolicy.NONE if ready else schema)
    if schema is not SchemaPolicy.NONE and not _is_memory(dsn):
        with _guard:
            _schema_ready.add(known)
    store._cache = _cache_for(known[0], prefix)
    return store


async def acquire_store(dsn: str, *, table_prefix: str = "pl_",
                        schema: SchemaPolicy = SchemaPolicy.AUTO_CREATE) -> Store:
    """The process's store for ``dsn`` in the running event loop (opened if needed).

    Every call must be paired with :func:`release_store`.
    """
    key = (_named(dsn), table_prefix, schema, asyncio.get_running_loop())
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
            idle = _idle.pop(store, None)
        if idle is not None:  # taken again within its grace: it stays open
            idle.reclaimed = True
            if idle.task is not None:
                idle.task.cancel()
            owned(store._database, False)
        return store


async def release_store(store: Store, *, grace: float = DEFAULT_GRACE) -> None:
    """Give back a store from :func:`acquire_store`.

    The last release keeps it open ``grace`` seconds more for the next
    :func:`acquire_store`, then closes it (at once with ``grace=0``, or when the
    releasing task is being cancelled).
    """
    task = asyncio.current_task()
    stopping = task is not None and task.cancelling() > 0
    with _guard:
        left = _refs.get(store, 0) - 1
        if left > 0:
            _refs[store] = left
            return
        _refs.pop(store, None)
        keys = [k for k, ref in _stores.items() if ref() is store]
        if grace > 0 and not stopping and keys:
            loop = asyncio.get_running_loop()
            idle = _Idle(loop.create_future())
            _idle[store] = idle
            idle.task = loop.create_task(
                _close_when_idle(store, idle, grace), name="power_loop: idle shared store")
            owned(store._database, True)
            return
        for key in keys:
            del _stores[key]
    await store.aclose()


async def _close_when_idle(store: Store, idle: _Idle, grace: float) -> None:
    timer = asyncio.get_running_loop().call_later(grace, _expire, idle.expire)
    try:
        await idle.expire
    except asyncio.CancelledError:
        if idle.reclaimed:
            return  # a loop took the store again
        await _retire(store, idle)  # the event loop is shutting down
        raise
    finally:
        timer.cancel()
    await _retire(store, idle)


async def _retire(store: Store, idle: _Idle) -> None:
    """Close an idle store, unless a loop took it again first."""
    with _guard:
        if _idle.get(store) is not idle:
            return
        del _idle[store]
        for key in [k for k, ref in _stores.items() if ref() is store]:
            del _stores[key]
    await store.aclose()


def shared_stores() -> int:
    """How many shared stores are open now (idle ones included), in every event loop
    (for tests and checks)."""
    with _guard:
        return sum(1 for ref in _stores.values() if ref() is not None)


def idle_stores() -> int:
    """How many shared stores no loop holds, open for their grace period now."""
    with _guard:
        return len(_idle)


def forget_schema(table_prefix: str) -> None:
    """Check the schema again at the next open of any DSN with ``table_prefix`` (after
    its tables were dropped); idle stores with that prefix are closed, not reused."""
    with _guard:
        _schema_ready.difference_update({k for k in _schema_ready if k[1] == table_prefix})
        for key in [k for k in _caches if k[1] == table_prefix]:
            del _caches[key]
        for opened in [k for k in _stores if k[1] == table_prefix]:
            store = _stores[opened]()
            idle = _idle.pop(store, None) if store is not None else None
            if store is None or idle is None:
                continue
            # The next loop opens (and checks) a store of its own; this one is released
            # now, without its event loop: an asynchronous close could be cut short by
            # that loop shutting down, leaving a driver thread to call into a closed loop.
            del _stores[opened]
            idle.reclaimed = True  # its task ends without closing anything
            if idle.task is not None:
                try:
                    idle.task.get_loop().call_soon_threadsafe(idle.task.cancel)
                except RuntimeError:
                    pass  # its event loop is closed
            release_now(store._database)
