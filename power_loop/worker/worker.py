"""``Worker``: fires due timers and finishes sends their processes left behind.

Run any number of workers, in any number of processes on any number of machines, on
one database: they share the work through leases with epochs in the store. Each poll a
worker claims stranded sends (then due timers) up to its free concurrency, runs them
through the application's own loop (its model, tools and config, from ``loop_factory``),
and sleeps until the next poll or the next known due time, whichever is sooner. A timer
scheduled (or unparked, or handed back) for before then wakes it at once: on PostgreSQL
from any process, through ``LISTEN``/``NOTIFY``; elsewhere when it comes from the
worker's own store object (a worker inside the application), else the next poll finds it.

Shutdown (SIGTERM, or :meth:`Worker.request_stop`): the worker stops claiming, lets
what it holds finish for up to ``grace_period`` seconds, then releases the rest (sends
stay pending, their leases free, for another worker). A second request exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from power_loop.errors import (
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SendPendingError,
    SessionBusyError,
    SessionNotFoundError,
    WorkflowFailedError,
    WorkflowLeaseLostError,
)
from power_loop.events.sinks import Sink, check_sinks, sink_feed
from power_loop.events.types import (
    Event,
    SessionParked,
    TimerFired,
    TimerParked,
    WorkerClaimed,
    WorkerLostLease,
    WorkerReleased,
)
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.driver import CANCEL_MEANS_RELEASE
from power_loop.loop.lease_keeper import LeaseKeeper
from power_loop.store.port import Listener
from power_loop.store.records import SessionClaim
from power_loop.store.store import Store, open_store
from power_loop.timers.records import TimerClaim

log = logging.getLogger("power_loop.worker")
LoopFactory = Callable[[Store], "StatefulAgentLoop | Awaitable[StatefulAgentLoop]"]
Emit = Callable[[Event], None]


@dataclass(slots=True)
class WorkerStats:
    """What a worker did since it started."""

    timers_fired: int = 0
    timers_skipped: int = 0
    timers_released: int = 0
    timers_parked: int = 0
    sends_resumed: int = 0
    sessions_parked: int = 0
    leases_lost: int = 0
    workflows_resumed: int = 0
    workflows_parked: int = 0
    failures: int = 0
    polls: int = 0
    wakeups: int = 0
    """Polls brought forward by a notification of a timer due before the next poll."""


class Worker:
    """Fires due timers and resumes stranded sends, sharing the work with other workers.

    Args:
        dsn: The store (or pass ``store``).
        store: An open store (the caller closes it).
        loop_factory: Builds the loop the work runs on: ``factory(store)`` returning a
            :class:`~power_loop.StatefulAgentLoop` on that store (sync or async).
        concurrency: Timers and sends run at once.
        poll_interval: Longest sleep between polls, in seconds.
        claim_ttl: Seconds a timer claim lasts between renewals (a dead worker's timers
            are taken up by another after at most this long).
        max_attempts: Claims of one timer fire, or resumes of one session's send, before
            it is parked.
        grace_period: Seconds a stopping worker lets running work finish.
        table_prefix: With ``dsn``: the store's table prefix.
        on_event: Receives the worker's events and those of the work it runs.
        sinks: Also receive them (:class:`~power_loop.Sink`; each fed from its own
            queue and thread). The loop's own ``config.sinks`` receive the worker's
            events too (claims, releases, parked work) beside the loop's.
    """

    def __init__(self, *, loop_factory: LoopFactory, dsn: str | None = None,
                 store: Store | None = None, concurrency: int = 4,
                 poll_interval: float = 1.0, claim_ttl: float = 30.0, max_attempts: int = 5,
                 grace_period: float = 30.0, table_prefix: str = "pl_",
                 on_event: Emit | None = None, name: str | None = None,
                 sinks: Sequence[Sink] = ()) -> None:
        if (dsn is None) == (store is None):
            raise InvalidArgumentError("pass exactly one of dsn= or store=")
        if concurrency < 1 or poll_interval <= 0 or claim_ttl <= 0 or max_attempts < 1:
            raise InvalidArgumentError("Worker needs concurrency >= 1, poll_interval > 0, "
                                       "claim_ttl > 0 and max_attempts >= 1")
        self._factory = loop_factory
        self._dsn, self._store, self._owns_store = dsn, store, store is None
        self._prefix = table_prefix
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.grace_period = grace_period
        self._on_event = on_event
        self._feed = sink_feed(check_sinks(sinks, "Worker sinks"))
        self._loop_feed: Emit | None = None
        self.name = name or f"worker:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._forced = False
        self._wake = asyncio.Event()
        self._loop: StatefulAgentLoop | None = None
        self._listener: Listener | None = None

    def __repr__(self) -> str:
        return f"Worker(name={self.name!r}, concurrency={self.concurrency})"

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming and drain (first call); release everything at once (second)."""
        if self._stopping:
            self._forced = True
            for task in self._tasks:
                task.cancel()
        self._stopping = True
        self._wake.set()

    async def run(self, *, handle_signals: bool = False) -> WorkerStats:
        """Work until :meth:`request_stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        store, loop = await self._start()
        running = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                running.add_signal_handler(sig, self.request_stop)
        try:
            while not self._stopping:
                # Cleared before the poll, so that a stop or a finished task during the
                # poll still cuts the sleep short.
                self._wake.clear()
                await self._keep_listening(store)
                await self.poll(store, loop)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(await self._sleep_for(store)):
                        await self._wake.wait()
            await self._drain()
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    running.remove_signal_handler(sig)
            await self._finish()
        return self.stats

    async def _start(self) -> tuple[Store, StatefulAgentLoop]:
        if self._store is None:
            assert self._dsn is not None
            self._store = await open_store(self._dsn, table_prefix=self._prefix)
        made = self._factory(self._store)
        loop = await made if inspect.isawaitable(made) else made
        if not isinstance(loop, StatefulAgentLoop):
            raise InvalidArgumentError("loop_factory must return a StatefulAgentLoop")
        self._loop = loop
        self._loop_feed = sink_feed(loop.config.sinks)
        log.info("%s started (concurrency %d)", self.name, self.concurrency)
        return self._store, loop

    async def _finish(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._owns_store and self._store is not None:
            await self._store.aclose()
        log.info("%s stopped: %s", self.name, self.stats)

    async def _drain(self) -> None:
        if self._tasks and not self._forced:
            log.info("%s stopping: %d tasks have %ss to finish", self.name, len(self._tasks),
                     self.grace_period)
            await asyncio.wait(self._tasks, timeout=self.grace_period)
        for task in self._tasks:
            task.cancel()  # CANCEL_MEANS_RELEASE: their sends stay pending for others
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _sleep_for(self, store: Store) -> float:
        if len(self._tasks) >= self.concurrency:
            return self.poll_interval  # woken early when a task ends
        try:
            due = await store.next_timer_due()
        except PowerLoopError:
            return self.poll_interval
        return self.poll_interval if due is None else min(self.poll_interval, max(0.0, due))

    # -- being woken ---------------------------------------------------------------------

    async def _keep_listening(self, store: Store) -> None:
        """Subscribe to new timers (from every process on PostgreSQL, from this store
        object elsewhere), and again after the subscription's connection was lost."""
        if self._listener is not None and self._listener.alive():
            return
        if self._listener is not None:
            log.warning("%s: lost its timer subscription; subscribing again", self.name)
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        try:
            # A lost subscription wakes the worker, to subscribe again at once.
            self._listener = await store.listen_for_timers(self._heard, self._wake.set)
        except PowerLoopError as exc:  # the database is unreachable: poll, retry later
            log.warning("%s could not subscribe to new timers: %s", self.name, exc)

    def _heard(self, due_in: float) -> None:
        """A timer was scheduled (or handed back): wake up if it is due before the next
        poll would come, and only then, so far-off timers cost no poll."""
        if due_in < self.poll_interval and not self._wake.is_set():
            self.stats.wakeups += 1
            self._wake.set()

    # -- one poll ----------------------------------------------------------------------

    async def poll(self, store: Store, loop: StatefulAgentLoop) -> int:
        """Claim what is due up to the free concurrency and start it; returns how much."""
        free = self.concurrency - len(self._tasks)
        started = 0
        if free <= 0:
            return 0
        self.stats.polls += 1
        try:
            # Stranded sends first: a timer of their session cannot fire before they end.
            claims, parked = await store.claim_stranded_sessions(
                self.name, ttl=loop.config.lease_ttl, limit=free,
                max_attempts=self.max_attempts)
            for session_id in parked:
                self.stats.sessions_parked += 1
                log.warning("%s parked session %r: %d resumes of its send did not finish "
                            "(`power-loop sessions list --parked` lists them, `power-loop "
                            "sessions unpark` retries one)", self.name, session_id,
                            self.max_attempts)
                self._emit(SessionParked(session_id=session_id, attempts=self.max_attempts))
            for session_claim in claims:
                self._start_task(self._resume(loop, session_claim))
            started += len(claims)
            free -= len(claims)
            if free > 0:  # workflows whose executor died
                flows, stuck = await loop.claim_stranded_workflows(free, self.max_attempts)
                self.stats.workflows_parked += len(stuck)
                for workflow_id, epoch in flows:
                    self._start_task(self._run_workflow(loop, workflow_id, epoch))
                started += len(flows)
                free -= len(flows)
            if free > 0:
                timers = await store.claim_due_timers(self.name, ttl=self.claim_ttl,
                                                      limit=free)
                for claim in timers:
                    self._start_task(self._fire(store, loop, claim))
                started += len(timers)
        except PowerLoopError as exc:  # the database is unreachable for now: poll again
            self.stats.failures += 1
            log.warning("%s could not poll: %s", self.name, exc)
        return started

    def _start_task(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            CANCEL_MEANS_RELEASE.set(True)
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: unexpected failure", self.name, exc_info=task.exception())

    def _emit(self, event: Event) -> None:
        """A worker event: to the worker's sinks and the loop's (``config.on_event``,
        ``config.sinks``)."""
        for sink in (self._feed, self._loop_feed, self._on_event,
                     self._loop.config.on_event if self._loop else None):
            if sink is not None:
                sink(event)

    def _forward(self, event: Event) -> None:
        """An event of the loop's work: the loop gives it to its own sinks itself."""
        if self._feed is not None:
            self._feed(event)
        if self._on_event is not None:
            self._on_event(event)

    # -- the work ----------------------------------------------------------------------

    async def _fire(self, store: Store, loop: StatefulAgentLoop, claim: TimerClaim) -> None:
        timer = claim.timer
        key = f"{timer.timer_id}#{timer.fire_count}"
        self._emit(WorkerClaimed(session_id=timer.session_id, worker=self.name, kind="timer",
                                 key=key))
        if timer.attempts > self.max_attempts:
            await store.park_timer(claim, {"reason": f"{timer.attempts - 1} failed attempts"})
            self.stats.timers_parked += 1
            self._emit(TimerParked(session_id=timer.session_id, timer_id=timer.timer_id,
                                   reason="too many failed attempts"))
            return
        delivered = asyncio.Event()
        keeper = LeaseKeeper(functools.partial(store.renew_timer_claim, claim,
                                               ttl=self.claim_ttl),
                             self.claim_ttl / 3, active=lambda: not delivered.is_set())
        sink = self._sink(delivered)
        try:
            result = await loop.fire_timer(claim, on_event=sink)
            if result is None and not delivered.is_set():
                self.stats.timers_skipped += 1
            else:
                self.stats.timers_fired += 1
        except SessionNotFoundError:
            await store.park_timer(claim, {"reason": "its session no longer exists"})
            self.stats.timers_parked += 1
            self._emit(TimerParked(session_id=timer.session_id, timer_id=timer.timer_id,
                                   reason="session not found"))
        except (SendPendingError, SessionBusyError) as exc:
            # Nothing wrong with the timer: its session is busy, or has a cut-off send
            # that a worker resumes first. Try again after a poll, not counted as failed.
            keeper.stop()
            await self._give_back(store, claim, delivered, exc, defer=True)
        except LeaseLostError:
            self.stats.leases_lost += 1
            self._emit(WorkerLostLease(session_id=timer.session_id, worker=self.name,
                                       kind="timer", key=key))
        except asyncio.CancelledError:
            await asyncio.shield(self._give_back(store, claim, delivered, None))
            raise
        except PowerLoopError as exc:
            self.stats.failures += 1
            log.warning("%s: timer %s failed: %s", self.name, key, exc)
            await self._give_back(store, claim, delivered, exc)
        finally:
            keeper.stop()

    def _sink(self, delivered: asyncio.Event) -> Emit:
        def sink(event: Event) -> None:
            if isinstance(event, TimerFired):
                delivered.set()
            self._forward(event)

        return sink

    async def _give_back(self, store: Store, claim: TimerClaim, delivered: asyncio.Event,
                         exc: BaseException | None, *, defer: bool = False) -> None:
        if delivered.is_set():
            return  # the fire is recorded and the timer moved on: nothing to give back
        reason = "stopping" if exc is None else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(PowerLoopError):
            if defer:
                await store.defer_timer_claim(claim, delay=self.poll_interval,
                                              error={"reason": reason[:500]})
            else:
                await store.release_timer_claim(claim, {"reason": reason[:500]})
        self.stats.timers_released += 1
        self._emit(WorkerReleased(session_id=claim.timer.session_id, worker=self.name,
                                  kind="timer", key=claim.timer.timer_id, reason=reason[:200]))

    def _run_workflow(self, loop: StatefulAgentLoop, workflow_id: str,
                      epoch: int) -> Awaitable[None]:
        return _run_workflow_claim(self, loop, workflow_id, epoch)

    async def _resume(self, loop: StatefulAgentLoop, claim: SessionClaim) -> None:
        session_id = claim.lease.session_id
        self._emit(WorkerClaimed(session_id=session_id, worker=self.name, kind="session",
                                 key=session_id))
        try:
            if await loop.resume_claimed(claim, on_event=self._forward) is not None:
                self.stats.sends_resumed += 1
        except LeaseLostError as exc:
            # Another worker took the send over (this one stalled past its lease): the
            # resume counted as an attempt, so say so where parking would be explained.
            self.stats.leases_lost += 1
            log.warning("%s: resuming %r lost its lease: %s", self.name, session_id, exc)
            self._emit(WorkerLostLease(session_id=session_id, worker=self.name,
                                       kind="session", key=session_id))
        except asyncio.CancelledError:
            self._emit(WorkerReleased(session_id=session_id, worker=self.name,
                                      kind="session", key=session_id, reason="stopping"))
            raise
        except PowerLoopError as exc:
            self.stats.failures += 1
            log.warning("%s: resuming %r failed: %s", self.name, session_id, exc)


async def _run_workflow_claim(worker: Worker, loop: StatefulAgentLoop, workflow_id: str,
                              epoch: int) -> None:
    try:
        await loop.run_claimed_workflow(workflow_id, epoch)
        worker.stats.workflows_resumed += 1
    except WorkflowFailedError:
        worker.stats.workflows_resumed += 1  # it ended (failed): recorded in its journal
    except WorkflowLeaseLostError:
        worker.stats.leases_lost += 1
    except PowerLoopError as exc:
        worker.stats.failures += 1
        log.warning("%s: resuming workflow %r failed: %s", worker.name, workflow_id, exc)


async def run_worker(**options: Any) -> WorkerStats:
    """Build a :class:`Worker` with ``options`` and run it with signal handling."""
    return await Worker(**options).run(handle_signals=True)
