"""One way to keep a lease alive while its holder works: :class:`LeaseKeeper`.

A send's session lease (:mod:`power_loop.loop.driver`) and a worker's timer claim
(:mod:`power_loop.worker.worker`) are both renewed a third of their time to live
before they expire, stop being renewed when their holder stops, and tell the holder
when the store says they were lost. A keeper waits on a timer, not a task: most holders
finish long before the first renewal is due, and pay for no task at all. The keepers of
one event loop share that timer (:class:`_KeeperClock`): a send starts and stops a
keeper, and neither arms nor cancels an event-loop timer for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

from power_loop.errors import PowerLoopError


class _KeeperClock:
    """One event-loop timer for every keeper of a loop, set for the earliest renewal
    due. A keeper that stops leaves the timer as it is: when it fires for nothing, it
    is set again for the earliest renewal still due, if any. Back-to-back sends, each
    with a keeper of its own, thus cost the event loop one timer per renewal period
    rather than one timer armed and cancelled per send."""

    __slots__ = ("__weakref__", "_at", "_due", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop keeps its clock, never the other way
        self._due: dict[LeaseKeeper, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = float("inf")

    def add(self, keeper: LeaseKeeper, period: float) -> None:
        """Call ``keeper._due()`` ``period`` seconds from now (unless removed first)."""
        loop = self._loop()
        assert loop is not None
        when = loop.time() + period
        self._due[keeper] = when
        if when < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._at = loop.call_at(when, self._fire), when

    def remove(self, keeper: LeaseKeeper) -> None:
        self._due.pop(keeper, None)

    def _fire(self) -> None:
        self._timer, self._at = None, float("inf")
        loop = self._loop()
        if loop is None or not self._due:
            return
        # As the event loop itself: a timer within the clock's resolution is due.
        now = loop.time() + _RESOLUTION
        ready = [keeper for keeper, when in self._due.items() if when <= now]
        for keeper in ready:
            del self._due[keeper]
        if self._due:
            self._at = min(self._due.values())
            self._timer = loop.call_at(self._at, self._fire)
        for keeper in ready:
            keeper._due()


_RESOLUTION = time.get_clock_info("monotonic").resolution
_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _KeeperClock] = (
    weakref.WeakKeyDictionary())
_MAKING = threading.Lock()  # event loops in several threads may make their clocks at once


_last: _KeeperClock | None = None
"""The clock asked for last (most processes run one event loop: no lookup then)."""


def _clock() -> _KeeperClock:
    """The running event loop's keeper clock."""
    global _last
    loop = asyncio.get_running_loop()
    clock = _last
    if clock is not None and clock._loop() is loop:
        return clock
    clock = _CLOCKS.get(loop)
    if clock is None:
        with _MAKING:
            clock = _CLOCKS.get(loop)
            if clock is None:
                clock = _CLOCKS[loop] = _KeeperClock(loop)
    _last = clock
    return clock


class LeaseKeeper:
    """Renews a lease every ``period`` seconds until :meth:`stop`.

    Args:
        renew: One renewal: ``True`` while the lease is held, ``False`` once the store
            says it was lost (taken over or released). A :class:`PowerLoopError` is a
            database that cannot be reached for now: the next period tries again.
        period: Seconds between renewals (a third of the time to live).
        on_lost: Called once when ``renew`` answers ``False``.
        lock: Held while renewing; the holder takes it around the writes that end its
            lease, so that a renewal never overlaps them.
        active: Checked under ``lock`` before each renewal: ``False`` stops the keeper.
    """

    def __init__(self, renew: Callable[[], Awaitable[bool]], period: float, *,
                 on_lost: Callable[[], None] | None = None,
                 lock: asyncio.Lock | None = None,
                 active: Callable[[], bool] = lambda: True) -> None:
        self._renew = renew
        self._period = period
        self._on_lost = on_lost
        self._lock = lock if lock is not None else asyncio.Lock()
        self._active = active
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._clock = _clock()
        self._clock.add(self, period)

    def _due(self) -> None:
        if not self._stopped:
            self._task = asyncio.create_task(self._once())

    async def _once(self) -> None:
        """Renew once, then set the timer for the next renewal."""
        async with self._lock:
            if self._stopped or not self._active():
                return
            try:
                held = await self._renew()
            except PowerLoopError:
                held = True  # unreachable for now; try again next period
            if not held:
                self._stopped = True
                if self._on_lost is not None:
                    self._on_lost()
                return
        if not self._stopped:
            self._clock.add(self, self._period)

    def stop(self) -> None:
        """Renew no more (a renewal under way is cancelled)."""
        self._stopped = True
        self._clock.remove(self)
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`stop`, and wait until a renewal under way has ended."""
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
