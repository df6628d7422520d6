"""Work handed to a worker thread, so that the event loop goes on meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


async def threaded(run: Callable[[], _T]) -> _T:
    """``run()`` on a worker thread. If cancelled meanwhile, it lets the work finish
    first, so that nothing else uses the connection at the same time."""
    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what goes on
        raise
