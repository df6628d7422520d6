"""A store nobody closed: a :class:`ResourceWarning`, as for files and sockets, and its
connections released without an event loop (none may be left by then).

Each driver's database registers what to release when it opens and cancels that when it
is closed. The release runs when the database is garbage-collected or, at the latest,
when the interpreter exits; it never keeps the interpreter alive (the drivers' threads
are daemons, and nothing here waits).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

ADVICE = ("close it with `await store.aclose()` or `async with await open_store(...)`; "
          "a StatefulAgentLoop(dsn=...) closes the store it opened in `await loop.aclose()` "
          "or `async with StatefulAgentLoop(...)`")


def watch(owner: object, where: str,
          release: Callable[[], None]) -> weakref.finalize[[str, Callable[[], None]], object]:
    """Release and warn when ``owner`` goes away unclosed; ``.detach()`` the result on
    close. ``release`` must not refer to ``owner`` (it would never go away)."""
    return weakref.finalize(owner, _abandoned, where, release)


def _abandoned(where: str, release: Callable[[], None]) -> None:
    # Released first: a warning turned into an error must not keep anything open.
    try:
        release()
    except Exception:
        pass  # at exit the event loop is closed: the drivers' finalizers close the sockets
    warnings.warn(f"unclosed power_loop store ({where}): {ADVICE}", ResourceWarning,
                  stacklevel=2)
