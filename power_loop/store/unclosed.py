"""A store nobody closed: a :class:`ResourceWarning`, as for files and sockets, and its
connections released without an event loop (none may be left by then).

Each driver's database registers what to release when it opens and cancels that when it
is closed. The release runs when the database is garbage-collected or, at the latest,
when the interpreter exits; it never keeps the interpreter alive (the drivers' threads
are daemons, and nothing here waits).

A store that the process's registry of shared stores holds idle (kept open for the next
``StatefulAgentLoop(dsn=...)``, see :mod:`power_loop.store.shared`) is not abandoned by
anyone: it is marked :func:`owned`, and is released at exit without a warning.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

ADVICE = ("close it with `await store.aclose()` or `async with await open_store(...)`; "
          "a StatefulAgentLoop(dsn=...) closes the store it opened in `await loop.aclose()` "
          "or `async with StatefulAgentLoop(...)`")


class Watch:
    """What :func:`watch` returns: ``.detach()`` it on close; ``.owned`` (set by the
    registry of shared stores) releases without a warning."""

    __slots__ = ("_finalizer", "_state")

    def __init__(self, owner: object, where: str, release: Callable[[], None]) -> None:
        self._state = [False]  # [owned]: read by the finalizer, which cannot hold self
        self._finalizer = weakref.finalize(owner, _abandoned, where, release, self._state)

    def detach(self) -> None:
        """The owner was closed: nothing to release or report."""
        self._finalizer.detach()

    @property
    def owned(self) -> bool:
        return self._state[0]

    @owned.setter
    def owned(self, value: bool) -> None:
        self._state[0] = value


def watch(owner: object, where: str, release: Callable[[], None]) -> Watch:
    """Release and warn when ``owner`` goes away unclosed; ``.detach()`` the result on
    close. ``release`` must not refer to ``owner`` (it would never go away)."""
    return Watch(owner, where, release)


def owned(database: object, value: bool) -> None:
    """Mark a driver's database as held by the registry (``True``: released quietly at
    exit) or by a loop again (``False``)."""
    found = getattr(database, "_unclosed", None)
    if isinstance(found, Watch):
        found.owned = value


def release_now(database: object) -> None:
    """Release a driver's database here and now, without an event loop and without a
    warning (the registry of shared stores closing an idle store from synchronous
    code)."""
    found = getattr(database, "_unclosed", None)
    if isinstance(found, Watch):
        found.owned = True
        found._finalizer()


def _abandoned(where: str, release: Callable[[], None], state: list[bool]) -> None:
    # Released first: a warning turned into an error must not keep anything open.
    try:
        release()
    except Exception:
        pass  # at exit the event loop is closed: the drivers' finalizers close the sockets
    if state[0]:
        return  # held idle by the registry of shared stores: nobody forgot to close it
    warnings.warn(f"unclosed power_loop store ({where}): {ADVICE}", ResourceWarning,
                  stacklevel=2)
