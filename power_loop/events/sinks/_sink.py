"""The ``Sink`` protocol, and ``MemorySink``, its deterministic fake."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from power_loop.events.types import Event

DEFAULT_QUEUE_SIZE = 10_000
"""Events held for one sink, waiting for it, before new ones are dropped (and counted)."""


@runtime_checkable
class Sink(Protocol):
    """Receives every event a loop (or a worker) emits, off the loop's thread.

    power_loop calls a sink from a thread of its own (one per sink), in the order the
    events were emitted, never two calls at once. A sink may be slow, block, or raise:
    the loop never waits for it. Events wait in a bounded queue (``queue_size``
    attribute if the sink has one, else 10,000); when it is full, new events are
    dropped. What raises, and what is dropped, is logged once per sink and counted
    (:func:`~power_loop.sink_stats`).

    Implement all three methods (``flush`` and ``close`` may do nothing).
    """

    def handle(self, event: Event) -> None:
        """Take one event (from the sink's own thread)."""
        ...

    def flush(self) -> None:
        """The queue ran empty: write out what is buffered."""
        ...

    def close(self) -> None:
        """No event follows (:func:`~power_loop.close_sinks`, or the process exits)."""
        ...


class MemorySink:
    """Keeps every event it is given, in order: a sink for tests and examples.

    Args:
        queue_size: Events held for it before new ones are dropped.
    """

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._events: list[Event] = []
        self._changed = threading.Condition()
        self.closed = False

    def __repr__(self) -> str:
        return f"MemorySink({len(self._events)} events)"

    @property
    def events(self) -> list[Event]:
        """A copy of the events received so far."""
        with self._changed:
            return list(self._events)

    def handle(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(events)`` holds (``False`` if ``timeout`` passes first)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._events), timeout)
