"""The window cache: each session's rendered history, shared by every loop over a store.

It is a pure accelerator. What it holds (the context engine's ``History``, opaque here)
carries the store token it was built from (the session's incarnation, the seq and send
it reaches, the fold it starts after), and the send checks that token against what the
store returned before using it: a window that is behind is completed by reading only
the messages after it, and one from another incarnation or fold is rebuilt. A cold
process and a warm one therefore build the same request.

It is bounded by bytes (an estimate of what the held messages take), least recently
used dropped first, and counts hits and misses. A send *takes* its session's entry and
puts it back when it ends, so two sends never share a mutable entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from power_loop.errors import InvalidArgumentError

T = TypeVar("T")
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""The default bound of a store's window cache: 64 MiB of estimated message bytes."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a window cache's counters.

    Attributes:
        hits: Takes that found an entry (the send then reads only what is new).
        misses: Takes that found none (the send reads the window from the store).
        entries: Sessions held now.
        bytes: Estimated bytes held now (never above ``max_bytes``).
        max_bytes: The bound (``0``: the cache holds nothing).
        evictions: Entries dropped to stay within the bound.
    """

    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int


class WindowCache(Generic[T]):
    """Recently used per-session state, bounded by estimated bytes (LRU).

    Args:
        max_bytes: The bound; ``0`` disables the cache (every take misses).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise InvalidArgumentError(f"cache_bytes must be an int >= 0, not {max_bytes!r}")
        self._max = max_bytes
        self._items: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        # Stores of one DSN in several event loops (threads) may share one cache.
        self._lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return self._max

    def take(self, key: Hashable) -> T | None:
        """Remove and return the entry under ``key`` (a send owns it while it runs)."""
        with self._lock:
            found = self._items.pop(key, None)
            if found is None:
                self._misses += 1
                return None
            self._hits += 1
            self._bytes -= found[1]
            return found[0]

    def put(self, key: Hashable, item: T, nbytes: int) -> None:
        """Hold ``item`` (estimated at ``nbytes``), dropping the least recently used
        entries past the bound; an item larger than the bound is not held."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self._max:
                return
            self._items[key] = (item, nbytes)
            self._bytes += nbytes
            while self._bytes > self._max:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size
                self._evictions += 1

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """The counters and the bytes held, now."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self._bytes,
                              self._max, self._evictions)

    def __repr__(self) -> str:
        s = self.stats()
        return (f"WindowCache(entries={s.entries}, bytes={s.bytes}, max_bytes={s.max_bytes}, "
                f"hits={s.hits}, misses={s.misses})")
