"""The session inspector: a read-only web UI over any store (``power-loop inspect``).

Pages list sessions (searched, filtered by state), show one session's timeline
(messages, tool calls and results, sends, waits, folds, projections, notes, usage), its
sub-agent tree, timers and parked work, and workflows with their step tables; a
session's page follows what it commits, live, through :func:`power_loop.events.feed.watch`.

Everything shown was written by models and tools, so it is treated as hostile: the HTML
is built by an escaping builder (:mod:`power_loop.inspector.markup`) and served under a
Content-Security-Policy that forbids inline script. It needs the ``web`` extra
(Starlette and uvicorn), imported only when an inspector is made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from power_loop.errors import MissingDriverError

if TYPE_CHECKING:
    from power_loop.store import Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8710
TOKEN_ENV = "POWER_LOOP_INSPECT_TOKEN"
"""The environment variable holding the token when ``--token`` is not given."""


def require_web() -> None:
    """Fail with :class:`MissingDriverError` (extra ``web``) unless Starlette and uvicorn
    can be imported."""
    for module, package in (("starlette", "starlette"), ("uvicorn", "uvicorn")):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingDriverError(package, "web") from None


def create_inspector_app(store: Store, *, token: str | None = None) -> Any:
    """The inspector as an ASGI application over an open ``store``.

    The caller opens and closes the store. With a ``token``, every page asks for it
    (an ``Authorization: Bearer`` header, or the login form's cookie).

    Raises:
        MissingDriverError: the ``web`` extra is not installed.
    """
    require_web()
    from power_loop.inspector.app import build

    return build(store, token=token)


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "create_inspector_app",
           "require_web"]
