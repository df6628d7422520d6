"""One way to keep a lease alive while its holder works: :class:`LeaseKeeper`.

A send's session lease (:mod:`power_loop.loop.driver`) and a worker's timer claim
(:mod:`power_loop.worker.worker`) are both renewed a third of their time to live
before they expire, stop being renewed when their holder stops, and tell the holder
when the store says they were lost. A keeper waits on a timer, not a task: most holders
finish long before the first renewal is due, and pay for no task at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from power_loop.errors import PowerLoopError


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
        self._timer = asyncio.get_running_loop().call_later(period, self._due)

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
            self._timer = asyncio.get_running_loop().call_later(self._period, self._due)

    def stop(self) -> None:
        """Renew no more (a renewal under way is cancelled)."""
        self._stopped = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`stop`, and wait until a renewal under way has ended."""
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
