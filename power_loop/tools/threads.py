"""The threads sync tools run on: power_loop's own, never the event loop's default executor.

A sync tool that blocks past its deadline is abandoned but keeps its thread: Python cannot
stop a thread. On the default executor (``asyncio.to_thread``) a few such calls would
occupy every thread of it, and everything else that uses it would queue behind them: the
next sync tools (timing out without ever starting), the application's own ``to_thread``,
``loop.getaddrinfo`` (DNS, when a PostgreSQL or MySQL store connects), and the SQLite
store's statements. And ``asyncio.run`` joins that executor at exit, so a tool blocked
forever would keep the process alive.

Here every call gets a thread at once: an idle one of ours, or a new one. They are
daemon threads that nobody joins (not a ``ThreadPoolExecutor``, whose threads are joined
at exit); an idle one ends after :data:`IDLE_SECONDS`. Calls abandoned while their thread
still runs are counted; past :data:`MAX_ABANDONED` of them a new sync call is refused
(:class:`AbandonedThreadsFull`) rather than given one more thread that may never return.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

MAX_ABANDONED = 32
"""Abandoned sync calls whose threads may still be running before new ones are refused."""

IDLE_SECONDS = 30.0
"""How long an idle thread waits for another call before it ends."""


class AbandonedThreadsFull(RuntimeError):
    """Too many abandoned sync tool calls are still running: this one was not started."""


@dataclass(eq=False, slots=True)
class Job(Generic[_T]):
    """One call on one of our threads; ``future`` (on ``loop``) gets what it returned."""

    run: Callable[[], _T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[_T] = field(init=False)
    abandoned: bool = False
    over: bool = False

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()


_lock = threading.Lock()
_queue: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
_idle = 0  # threads waiting on _queue that no job has been promised to
_abandoned = 0  # abandoned jobs whose thread still runs them


def submit(fn: Callable[..., _T], /, *args: Any) -> Job[_T]:
    """Start ``fn(*args)`` on a thread now, in a copy of the current context (as
    ``asyncio.to_thread`` does). Await ``job.future`` for its result.

    Raises:
        AbandonedThreadsFull: :data:`MAX_ABANDONED` abandoned calls are still running.
        RuntimeError: No thread could be started.
    """
    global _idle
    run = functools.partial(contextvars.copy_context().run, fn, *args)
    job = Job(run, asyncio.get_running_loop())
    with _lock:
        if _abandoned >= MAX_ABANDONED:
            raise AbandonedThreadsFull(_abandoned)
        if _idle:
            _idle -= 1
            _queue.put(job)  # an idle thread is waiting for it
            return job
    threading.Thread(target=_serve, args=(job,), name="power_loop sync tool",
                     daemon=True).start()
    return job


def abandon(job: Job[Any]) -> None:
    """Write ``job`` off: its result is no longer awaited; its thread counts as held."""
    global _abandoned
    with _lock:
        if not job.over and not job.abandoned:
            job.abandoned = True
            _abandoned += 1


def abandoned_running() -> int:
    """How many abandoned calls are still running in their threads."""
    return _abandoned


def _serve(job: Job[Any]) -> None:
    global _idle
    while True:
        _do(job)
        with _lock:
            _idle += 1
        while True:
            try:
                job = _queue.get(timeout=IDLE_SECONDS)
                break
            except queue.Empty:
                with _lock:
                    # Idle threads are interchangeable: while any is unpromised this one
                    # may go; else a job was promised to us all and is on its way.
                    if _idle:
                        _idle -= 1
                        return


def _do(job: Job[Any]) -> None:
    global _abandoned
    try:
        outcome: tuple[bool, Any] = (True, job.run())
    except BaseException as exc:  # handed to the awaiting task, as to_thread does
        outcome = (False, exc)
    with _lock:
        job.over = True
        if job.abandoned:
            _abandoned -= 1
    if not job.abandoned:
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting any more


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return  # its waiter was cancelled
    ok, value = outcome
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # a future refuses it (it would end a generator)
        future.set_exception(RuntimeError(f"StopIteration: {value}"))
    else:
        future.set_exception(value)


def _forget_threads() -> None:
    """After ``fork`` only the forking thread exists in the child: start afresh."""
    global _lock, _queue, _idle, _abandoned
    _lock = threading.Lock()
    _queue = queue.SimpleQueue()
    _idle = _abandoned = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)
