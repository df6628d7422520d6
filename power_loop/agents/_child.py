"""Running a child session's task to its answer, whoever started it and wherever it stopped.

The child's task is its first send, opened with a fixed request key. So attaching to a
child is the same whether it is new, half done, or finished:

* no send yet -> the send starts (the key records it);
* its send is finished -> the key finds it and its stored answer is returned;
* its send is pending (a process died while it ran, or its model failed) -> it is
  resumed here: calls cut off by the crash are re-run only if their tool is safe to
  repeat, exactly as ``resume`` does for any send;
* another process holds it (a worker finishing it) -> wait for that process, however
  long it takes, then read the answer. The parent's own lease is renewed meanwhile.

The child runs in a task of its own, so that its run and the parent's (each watching
its own lease) never cancel each other by mistake; cancelling the waiting parent
cancels that task and waits until the child has closed (or, in a worker,
released) its send.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from power_loop.errors import LeaseLostError, SendPendingError, SessionBusyError
from power_loop.events.types import ChildEvent, Event, SendFinished
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.results import SendResult
from power_loop.store.children import SessionLink

TASK_KEY = "agent-task"
"""The request key of a child's task send."""
TASK_SOURCE = "agent"
"""The ``source`` of a child's task message: another agent asked."""

BUSY_PAUSE = 0.05
"""Seconds between looks at a child another process holds (after the loop's own wait)."""

Emit = Callable[[Event], None]
T = TypeVar("T")


def forwarder(emit: Emit | None, link: SessionLink) -> Emit | None:
    """Carry a child's events to the parent's sink, tagged with the child's place."""
    if emit is None:
        return None

    def forward(event: Event) -> None:
        if isinstance(event, ChildEvent):  # a grandchild's: one level further down
            emit(dataclasses.replace(event, depth=event.depth + 1))
        else:
            emit(ChildEvent(session_id=event.session_id, send_index=event.send_index,
                            depth=1, parent_session_id=link.parent_id,
                            call_id=link.parent_call, agent=link.name, event=event))

    return forward


async def _own_task(work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own; cancelled with the caller, and waited for."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise


async def _start_or_find(loop: StatefulAgentLoop, child_id: str, task: str,
                         forward: Emit | None) -> SendResult:
    result: SendResult | None = None
    events = loop.stream(task, child_id, request_key=TASK_KEY, source=TASK_SOURCE)
    async with aclosing(events):
        async for event in events:
            if isinstance(event, SendFinished) and event.session_id == child_id:
                result = event.result
            if forward is not None:
                forward(event)
    assert result is not None  # a stream that ends without an error ends with it
    return result


async def attach(loop: StatefulAgentLoop, child_id: str, task: str,
                 forward: Emit | None) -> SendResult:
    """The answer of the child's task: started, found, resumed or waited for."""
    while True:
        try:
            return await _start_or_find(loop, child_id, task, forward)
        except (SendPendingError, LeaseLostError):
            pass  # started before (or taken over): finish it, or wait for its holder
        try:
            resumed = await _own_task(loop.resume(child_id, on_event=forward))
        except (SessionBusyError, LeaseLostError):
            await asyncio.sleep(BUSY_PAUSE)  # still held by another process: look again
            continue
        if resumed is not None:
            return resumed
        # Nothing pending any more: another process finished it; the key finds it.
