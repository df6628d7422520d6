"""How events reach sinks without ever slowing the loop or breaking it.

Each sink object gets one feed for the life of the process (however many loops,
configs and workers name it): a bounded queue and a daemon thread that drains it into
the sink. The loop's side of it is an ``append`` to a deque and, when the thread is
asleep, one ``set`` of a ``threading.Event``: no lock, no I/O, nothing the sink does.

* A sink that raises: the event is counted ``failed``, the first failure logged at
  WARNING (once per sink), and the next event is handed to it as usual.
* A sink that blocks: its queue fills; past ``queue_size`` new events are dropped,
  counted ``dropped``, logged once. Other sinks and the loop go on.
* At exit, what is queued is given ``EXIT_GRACE`` seconds to drain, then each sink is
  closed.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from power_loop.errors import InvalidArgumentError
from power_loop.events.sinks._sink import DEFAULT_QUEUE_SIZE, Sink
from power_loop.events.types import Event

log = logging.getLogger("power_loop.sinks")
Emit = Callable[[Event], None]
EXIT_GRACE = 2.0
"""Seconds the events still queued at interpreter exit are given to reach their sinks."""
LINGER = 0.05
"""Seconds a woken sink thread waits for more events before it hands them over (a
waiting :func:`flush_sinks` cuts it short)."""

_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What became of the events given to one sink.

    Attributes:
        accepted: Events queued for the sink.
        delivered: Events its ``handle`` returned from.
        failed: Events its ``handle`` raised on.
        dropped: Events not queued because its queue was full.
        pending: Events queued and not handled yet.
    """

    accepted: int
    delivered: int
    failed: int
    dropped: int
    pending: int


class _Feed:
    """One sink's queue and the thread that drains it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        size = getattr(sink, "queue_size", DEFAULT_QUEUE_SIZE)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise InvalidArgumentError(f"{sink!r}: queue_size must be a positive integer, "
                                       f"not {size!r}")
        self._size = size
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._stopping = False
        self._hurry = threading.Event()  # someone waits for the queue: stop lingering
        self.accepted = self.delivered = self.failed = self.dropped = 0
        self._warned_failed = self._warned_dropped = False
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name=f"power_loop-sink-{next(_numbers)}")
        self._thread.start()

    # -- the loop's side (never blocks, never raises) -----------------------------------

    def put(self, event: Event) -> None:
        if len(self._queue) >= self._size or self._stopping:
            self.dropped += 1
            if not self._warned_dropped:
                self._warned_dropped = True
                log.warning("sink %r is not keeping up: its queue of %d events is full, new "
                            "events are dropped (counted in sink_stats(sink).dropped)",
                            self.sink, self._size)
            return
        self.accepted += 1
        self._queue.append(event)
        if not self._wake.is_set():
            self._wake.set()

    # -- the sink's thread ---------------------------------------------------------------

    def _drain(self) -> None:
        queue, sink = self._queue, self.sink
        while True:
            self._wake.wait()
            if not self._stopping:
                # Let more events gather: one wake-up (and one GIL hand-over) per batch
                # instead of one per event is most of what feeding a sink costs.
                self._hurry.wait(LINGER)
            self._wake.clear()
            handled = False
            while queue:
                event = queue.popleft()
                handled = True
                try:
                    sink.handle(event)
                except BaseException as exc:  # a sink's failure is its own, never the loop's
                    self._failed(exc, "handle")
                    self.failed += 1
                else:
                    self.delivered += 1
            if handled:
                try:
                    sink.flush()
                except BaseException as exc:
                    self._failed(exc, "flush")
                with self._progress:
                    self._progress.notify_all()
            if self._stopping and not queue:
                return

    def _failed(self, exc: BaseException, what: str) -> None:
        if not self._warned_failed:
            self._warned_failed = True
            log.warning("sink %r raised in %s (it goes on receiving events; failures are "
                        "counted in sink_stats(sink).failed)", self.sink, what,
                        exc_info=exc)

    # -- waiting for it ------------------------------------------------------------------

    def wait_drained(self, deadline: float) -> bool:
        """Block until everything accepted so far is handled, or ``deadline`` passes."""
        target = self.accepted
        self._hurry.set()
        self._wake.set()
        try:
            with self._progress:
                return self._progress.wait_for(
                    lambda: self.delivered + self.failed >= target,
                    max(0.0, deadline - time.monotonic()))
        finally:
            self._hurry.clear()

    def stop(self, deadline: float) -> bool:
        """Drain until ``deadline``, then close the sink; ``True`` if all was handled."""
        drained = self.wait_drained(deadline)
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        if drained:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            # Still inside handle(): closing it from here could break a sink that is not
            # thread-safe, so it is left as it is.
            log.warning("sink %r did not finish its events in time and is not closed "
                        "(%d events left)", self.sink, len(self._queue))
            return False
        try:
            self.sink.close()
        except BaseException as exc:
            self._failed(exc, "close")
        return drained

    def stats(self) -> SinkStats:
        done = self.delivered + self.failed
        return SinkStats(self.accepted, self.delivered, self.failed, self.dropped,
                         max(0, self.accepted - done))


_feeds: dict[int, _Feed] = {}  # by id(sink); the feed holds the sink, so ids stay unique
_registry_lock = threading.Lock()


def _feed_of(sink: Sink) -> _Feed:
    feed = _feeds.get(id(sink))
    if feed is None:
        with _registry_lock:
            feed = _feeds.get(id(sink))
            if feed is None:
                feed = _feeds[id(sink)] = _Feed(sink)
    return feed


def check_sinks(sinks: Iterable[object], owner: str) -> tuple[Sink, ...]:
    """``sinks`` as a tuple, each checked to be a :class:`Sink`."""
    if isinstance(sinks, str | bytes) or not isinstance(sinks, Iterable):
        raise InvalidArgumentError(f"{owner} must be a list of sinks, not {sinks!r}")
    checked: list[Sink] = []
    for sink in sinks:
        if not isinstance(sink, Sink):
            raise InvalidArgumentError(
                f"{owner}: {sink!r} is not a sink: it needs handle(event), flush() and "
                "close() methods (see power_loop.Sink)")
        checked.append(sink)
    return tuple(checked)


def sink_feed(sinks: Sequence[Sink]) -> Emit | None:
    """One callable that queues an event for each of ``sinks`` (``None``: no sinks)."""
    if not sinks:
        return None
    puts = tuple(_feed_of(sink).put for sink in sinks)
    if len(puts) == 1:
        return puts[0]

    def to_all(event: Event) -> None:
        for put in puts:
            put(event)

    return to_all


def sink_stats(sink: Sink) -> SinkStats:
    """What became of the events given to ``sink`` in this process (zeros if none were)."""
    feed = _feeds.get(id(sink))
    return feed.stats() if feed is not None else SinkStats(0, 0, 0, 0, 0)


def _chosen(sinks: tuple[Sink, ...]) -> list[_Feed]:
    if not sinks:
        return list(_feeds.values())
    return [feed for sink in sinks if (feed := _feeds.get(id(sink))) is not None]


async def flush_sinks(*sinks: Sink, within: float = 10.0) -> bool:
    """Wait until the events emitted so far have reached ``sinks`` (default: all).

    Returns ``False`` if ``within`` seconds passed first (a sink is blocked or slow);
    the events stay queued for it.
    """
    deadline = time.monotonic() + within
    feeds = _chosen(sinks)
    if not feeds:
        return True
    results = await asyncio.gather(*(asyncio.to_thread(feed.wait_drained, deadline)
                                     for feed in feeds))
    return all(results)


async def close_sinks(*sinks: Sink, within: float = 10.0) -> bool:
    """Flush ``sinks`` (default: all), then close them; later events for them are dropped.

    Returns ``False`` if some events could not be handled within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    feeds = _chosen(sinks)
    results = await asyncio.gather(*(asyncio.to_thread(feed.stop, deadline)
                                     for feed in feeds))
    return all(results)


@atexit.register
def _at_exit() -> None:
    deadline = time.monotonic() + EXIT_GRACE
    for feed in list(_feeds.values()):
        if not feed._stopping:
            feed.stop(deadline)
