"""Waiting for a session another holder has: retried within ``lease_wait``, and reported.

A wait is never silent. Each holder waited on is reported once, as a
:class:`~power_loop.events.LeaseWait` event and a log line on ``power_loop.loop``: who
holds the session, how long its lease still runs unless renewed, and why the wait
lasts. A holder that died keeps the session until its lease expires (``lease_ttl``);
that wait is logged at INFO with its length. Waiting for a holder that is running (a
send of the session in progress) is routine, and logged at DEBUG.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from power_loop.errors import SessionBusyError
from power_loop.events.types import Event, LeaseWait
from power_loop.store.records import Lease

T = TypeVar("T")
Taken = TypeVar("Taken", bound="_HasLease")
Emit = Callable[[Event], None]

log = logging.getLogger("power_loop.loop")
_HOST = socket.gethostname()

_PID_MAX = 2**22
"""The largest pid Linux hands out (``pid_max``'s ceiling); bigger is not a pid."""

HOLDER_RUNNING = "holder_running"
"""The holder's process is alive (on this host): a send or recovery of the session runs."""
HOLDER_GONE = "holder_gone"
"""The holder's process (on this host) no longer exists: its lease is waited out."""
HOLDER_UNKNOWN = "holder_unknown"
"""The holder is on another host (or not a power_loop process): alive or not is unknown."""


class _HasLease(Protocol):
    @property
    def lease(self) -> Lease | None: ...


def holder_state(owner: str) -> str:
    """Whether a lease owner's process is running, as far as this host can tell.

    Loops and workers name their leases ``...host:pid:...``; a holder on this host is
    looked up by its pid. Any other holder is :data:`HOLDER_UNKNOWN`.
    """
    parts = owner.split(":")
    for host, pid in itertools.pairwise(parts):
        if host == _HOST and pid.isascii() and pid.isdigit() and 0 < int(pid) <= _PID_MAX:
            running = _process_running(int(pid))
            if running is None:
                return HOLDER_UNKNOWN
            return HOLDER_RUNNING if running else HOLDER_GONE
    return HOLDER_UNKNOWN


def _process_running(pid: int) -> bool | None:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill there terminates the process: never probe
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return None
    # A process killed but not yet reaped by its parent still answers signal 0.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[-1].split()
    except OSError:
        return True
    return not (state and state[0] in ("Z", "X"))


def _limit(wait_limit: float | None) -> str:
    return "without limit (lease_wait=None)" if wait_limit is None \
        else f"at most {wait_limit:.1f}s (lease_wait)"


def report_wait(event: LeaseWait) -> None:
    """The log line of a wait (INFO unless the holder is known to be running)."""
    session, holder, expires = event.session_id, event.holder, event.expires_in
    if event.reason == HOLDER_GONE:
        log.info("session %r: waiting %.1fs for the lease of %r to expire: its process is "
                 "gone (it died holding the session); the session is free then",
                 session, expires if event.wait_limit is None else min(expires, event.wait_limit),
                 holder)
    elif event.reason == HOLDER_RUNNING:
        log.debug("session %r: waiting for %r to finish (its process is running); %s",
                  session, holder, _limit(event.wait_limit))
    else:
        log.info("session %r: waiting for %r (on another host: whether it is running cannot "
                 "be told here); its lease expires in %.1fs unless it renews it; waiting %s",
                 session, holder, expires, _limit(event.wait_limit))


async def wait_for_lease(attempt: Callable[[], Awaitable[T]], *, session_id: str,
                         lease_wait: float | None, emit: Emit | None,
                         send_index: int | None = None) -> T:
    """Retry ``attempt`` while the session is busy, within ``lease_wait`` seconds.

    Each new holder waited on is reported (:func:`report_wait`, and a ``LeaseWait``
    event to ``emit``). ``send_index``: the pending send the wait is for, if known.

    Raises:
        SessionBusyError: the session was still busy after ``lease_wait``.
    """
    clock = asyncio.get_running_loop().time
    deadline = None if lease_wait is None else clock() + lease_wait
    delay = 0.002
    reported: str | None = None
    while True:
        try:
            return await attempt()
        except SessionBusyError as busy:
            left = float("inf") if deadline is None else deadline - clock()
            if left <= 0:
                raise
            if busy.holder is not None and busy.holder != reported:
                reported = busy.holder
                event = LeaseWait(session_id=session_id, send_index=send_index,
                                  holder=busy.holder, reason=holder_state(busy.holder),
                                  expires_in=busy.retry_after,
                                  wait_limit=None if deadline is None else left)
                report_wait(event)
                if emit is not None:
                    emit(event)
            pause = min(delay * random.uniform(0.5, 1.0), busy.retry_after + 0.001, left)
            await asyncio.sleep(pause)
            delay = min(delay * 2, 0.1)
