"""Where a worker's time goes per timer fire, measured in-process.

One :class:`~power_loop.worker.Worker` with concurrency 1 runs in the benchmark's own
process on a backlog of due timers, over a :class:`StageStore` that adds each store
call's wall time to the stage it belongs to, and a :class:`TimedLLM` that times the
model's own work (each step of its stream, not the loop consuming it). With one fire at
a time the stages follow one another, so they add up to the wall time per fire; what the
store calls and the model do not account for is the loop's and the worker's own Python
(events, encoding, the window, tasks) plus the event loop's scheduling.

Stages, by the store method that does each (a call made from inside another store
call is not counted twice):

* ``claim``: ``claim_due_timers`` (the poll that finds the timer);
* ``begin_send``: takes the session lease and records the fire (the send and message);
* ``advance``: ``advance_timer``, marking the timer done once the fire is recorded;
* ``model``: the scripted model answering;
* ``final write``: the loop's last transaction (``Store._write`` around
  ``_finish_send_txn``): the answer, the send closed, the lease released;
* ``other store``: every other store call (the loop's reads);
* ``poll``: ``next_timer_due`` and ``claim_stranded_sessions`` (the rest of each poll).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.statements import count_statements
from bench.stopwatch import TRANSACTIONS
from bench.worker_app import cache_labels
from power_loop import StatefulAgentLoop
from power_loop.events.types import Event, SendFinished
from power_loop.llm.service import LLMRequest, LLMService, StreamItem
from power_loop.store import Database, Store
from power_loop.worker.worker import Worker

T = TypeVar("T")
_INSIDE: ContextVar[bool] = ContextVar("bench_worker_inside_store", default=False)

STAGES: dict[str, str] = {
    "claim_due_timers": "claim",
    "begin_send": "begin_send",
    "advance_timer": "advance",
    "finish_send": "final write",
    "_write": "final write",  # the loop's own final transaction (_finish_send_txn inside)
    "next_timer_due": "poll",
    "claim_stranded_sessions": "poll",
}
"""Store method -> stage; every other store method is ``other store``."""
ORDER = ("claim", "begin_send", "advance", "model", "final write", "other store", "poll")


@dataclass
class Tally:
    """Wall seconds and calls per stage, and calls per store method."""

    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)

    def add(self, stage: str, seconds: float, method: str | None = None) -> None:
        self.seconds[stage] += seconds
        self.calls[stage] += 1
        if method is not None:
            self.methods[method] += 1


class StageStore(Store):
    """A Store over ``database`` adding each outermost public call's time to ``tally``."""

    def __init__(self, database: Database, table_prefix: str, tally: Tally) -> None:
        super().__init__(database, table_prefix)
        for name in dir(Store):
            if (not name.startswith("_") or name in TRANSACTIONS) and name != "aclose" \
                    and inspect.iscoroutinefunction(getattr(Store, name)):
                setattr(self, name, _timed(getattr(self, name), name, tally))


def _timed(method: Callable[..., Awaitable[T]], name: str,
           tally: Tally) -> Callable[..., Awaitable[T]]:
    stage = STAGES.get(name, "other store")

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> T:
        if _INSIDE.get():
            return await method(*args, **kwargs)
        token = _INSIDE.set(True)
        start = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            tally.add(stage, time.perf_counter() - start, name)
            _INSIDE.reset(token)

    return timed


class TimedLLM:
    """An :class:`LLMService` adding the time ``inner`` takes per request to ``tally``."""

    def __init__(self, inner: LLMService, tally: Tally) -> None:
        self._inner, self._tally = inner, tally

    @property
    def model(self) -> str:
        return self._inner.model

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        items = self._inner.stream(request).__aiter__()
        spent = 0.0
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    spent += time.perf_counter() - start
                yield item
        finally:
            self._tally.add("model", spent)


@dataclass
class Profile:
    """Per fire: wall and CPU milliseconds, stage milliseconds and calls, statements."""

    concurrency: int
    fires: int
    wall_ms: float
    cpu_ms: float
    stage_ms: dict[str, float]
    stage_calls: dict[str, float]
    methods: dict[str, float]
    """Calls per fire of each store method."""
    statements: dict[str, float]
    """Statements per fire by leading keyword, counted at the driver."""

    @property
    def rest_ms(self) -> float:
        """Wall time no stage accounts for: the loop's and the worker's own work."""
        return self.wall_ms - sum(self.stage_ms.values())


async def profile_fires(store: Store, llm: LLMService, count: int,
                        schedule: Callable[[Store, int], Awaitable[None]]) -> Profile:
    """Fire ``count`` due timers (``schedule`` makes them) with one in-process worker."""
    tally = Tally()
    staged = StageStore(store._database, store.table_prefix, tally)
    await schedule(store, count)
    timed_llm = TimedLLM(llm, tally)
    finished = 0
    all_done = asyncio.Event()

    def on_event(event: Event) -> None:
        nonlocal finished
        if isinstance(event, SendFinished):
            finished += 1
            if finished >= count:
                all_done.set()

    def factory(s: Store) -> StatefulAgentLoop:
        return StatefulAgentLoop(llm=timed_llm, store=s)

    worker = Worker(store=staged, loop_factory=factory, concurrency=1, poll_interval=1.0,
                    on_event=on_event)
    cache_labels()
    with count_statements() as counts:
        cpu, wall = time.process_time(), time.perf_counter()
        running = asyncio.create_task(worker.run())
        await asyncio.wait([running, asyncio.create_task(all_done.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        worker.request_stop()
        await running
    fires = worker.stats.timers_fired
    per = 1 / max(fires, 1)
    return Profile(
        concurrency=1, fires=fires, wall_ms=wall * 1e3 * per, cpu_ms=cpu * 1e3 * per,
        stage_ms={s: tally.seconds[s] * 1e3 * per for s in ORDER},
        stage_calls={s: tally.calls[s] * per for s in ORDER},
        methods={m: c * per for m, c in tally.methods.most_common()},
        statements={k: v * per for k, v in counts.items()})
