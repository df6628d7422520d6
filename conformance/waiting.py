"""Waiting for a condition instead of sleeping and hoping it came true.

A test that needs time to pass (a lease to lapse, a worker to poll) waits for the state
that proves it, up to a generous bound that fails with what it was waiting for: never a
fixed sleep, whose length is either too short on a loaded machine or wasted on an idle one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from conformance.probes import database_now
from power_loop import Store

WITHIN = 30.0
"""The default bound, in seconds: far above any wait here, so reaching it is a failure."""


async def eventually(check: Callable[[], Awaitable[bool]], what: str, *,
                     within: float = WITHIN, every: float = 0.01) -> None:
    """Poll ``check`` until it holds; fail (naming ``what``) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)


async def past(store: Store, instant: datetime, *, within: float = WITHIN) -> None:
    """Wait until the database clock is after ``instant`` (a lease's ``expires_at``, say).

    Leases lapse by the database's clock, not the host's, so it is the one to ask.
    """

    async def passed() -> bool:
        return await database_now(store) > instant

    await eventually(passed, f"the database clock to pass {instant.isoformat()}",
                     within=within)
