"""LeaseKeeper: the keepers of one event loop share a timer, and each keeps its own
schedule (power_loop/loop/lease_keeper.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from power_loop.loop.lease_keeper import LeaseKeeper


def renewer(name: str, log: list[str], renewed: asyncio.Event | None = None,
            ) -> Callable[[], Awaitable[bool]]:
    async def renew() -> bool:
        log.append(name)
        if renewed is not None:
            renewed.set()
        return True

    return renew


async def test_a_keeper_renews_after_the_keeper_the_timer_was_set_for_stopped() -> None:
    # The shared timer is set for the earliest renewal due (``first``'s); ``first``
    # stops before it: the timer then serves ``second``, whose renewal is later.
    log: list[str] = []
    second_renewed = asyncio.Event()
    first = LeaseKeeper(renewer("first", log), 0.02)
    second = LeaseKeeper(renewer("second", log, second_renewed), 0.1)
    await first.aclose()
    await asyncio.wait_for(second_renewed.wait(), 10)
    await second.aclose()
    assert log == ["second"]  # ``first`` was due before ``second``, and never renewed


async def test_keepers_of_one_loop_renew_in_the_order_they_are_due() -> None:
    log: list[str] = []
    slow_renewed, quick_renewed = asyncio.Event(), asyncio.Event()
    slow = LeaseKeeper(renewer("slow", log, slow_renewed), 0.15)
    quick = LeaseKeeper(renewer("quick", log, quick_renewed), 0.03)
    await asyncio.wait_for(slow_renewed.wait(), 10)
    await asyncio.wait_for(quick_renewed.wait(), 10)
    await slow.aclose()
    await quick.aclose()
    # ``quick`` was added second, but due first: the timer was set again for it.
    assert log[0] == "quick" and "slow" in log


async def test_a_keeper_whose_lease_is_lost_says_so_once_and_stops() -> None:
    lost: list[int] = []
    calls: list[str] = []
    gone = asyncio.Event()

    async def renew() -> bool:
        calls.append("renew")
        return False

    def on_lost() -> None:
        lost.append(1)
        gone.set()

    keeper = LeaseKeeper(renew, 0.02, on_lost=on_lost)
    other_log: list[str] = []
    other_renewed = asyncio.Event()
    other = LeaseKeeper(renewer("other", other_log, other_renewed), 0.2)
    await asyncio.wait_for(gone.wait(), 10)
    await asyncio.wait_for(other_renewed.wait(), 10)  # well past two more periods
    await keeper.aclose()
    await other.aclose()
    assert lost == [1] and calls == ["renew"]
