"""The send a built-in context tool is serving, made visible to it by the driver.

Built-in tools (notes, recall) need the store, the session and the lease of the send
that runs them. The driver sets :data:`ACTIVE_RUN` while the send runs its tools; tasks
started for parallel calls inherit it, as context variables are copied into them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from power_loop.events.types import Event

if TYPE_CHECKING:  # the store imports timers, whose tools import this module
    from power_loop.store.store import Store


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """What a built-in tool may use of the send it serves."""

    store: Store
    session_id: str
    send_index: int
    epoch: int
    apply_note: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
    emit: Callable[[Event], None] | None = None
    """The send's event sink (its stream, ``config.on_event``), if anyone listens."""
    result_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Facts a tool leaves for its result's stored ``meta``, by call id (a sub-agent's
    session and token usage): stored with the result, never shown to the model."""


ACTIVE_RUN: ContextVar[ActiveRun | None] = ContextVar("power_loop_active_run", default=None)


def active_run(tool: str) -> ActiveRun:
    """The running send, or an error saying the tool works only inside a send."""
    run = ACTIVE_RUN.get()
    if run is None:
        raise RuntimeError(f"{tool} works only while a power_loop send runs it")
    return run
