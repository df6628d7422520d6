"""Running one tool call so that nothing the tool does can wedge the send.

The tool runs in a task of its own (a sync tool in a thread of power_loop's own under it,
see :mod:`power_loop.tools.threads`), awaited with a deadline; a sync tool's deadline
counts from when its thread calls it. Whatever it raises (any exception,
``StopIteration``, ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, an exception
group) is caught inside that task and becomes an error result; its type and traceback
go to ``ToolCallFinished`` and to the ``power_loop.tools`` logger, never to the model.
At the deadline the task is cancelled and abandoned: the send goes on at once and
whatever the tool does later is discarded. Only the cancellation of the send itself
propagates, after the tool has had up to :data:`CANCEL_GRACE` seconds to wind down.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from power_loop.errors import ToolError
from power_loop.llm.messages import ToolCallPart, ToolResultPart
from power_loop.tools.context import ToolContext
from power_loop.tools.rendering import (
    MAX_ERROR_CHARS,
    clean,
    format_suspended,
    format_thread_stack,
    format_traceback,
    qualified_name,
    render_output,
    return_problem,
    text_of,
    truncate,
    type_name,
)
from power_loop.tools.threads import AbandonedThreadsFull, Job, abandon, submit
from power_loop.tools.tool import Tool

log = logging.getLogger("power_loop.tools")

CANCEL_GRACE = 1.0
"""Seconds a cancelled send waits for its running tools to wind down before leaving them."""

_GROUP_SHOWN = 5
# Abandoned tool tasks, kept alive until they end: the event loop holds tasks weakly.
_abandoned: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one call ended.

    Attributes:
        result: What the model reads.
        error_type: The qualified name of the exception the tool raised (or that showing
            its value raised; ``TimeoutError`` when it was abandoned at its deadline);
            ``None`` when the tool returned normally or never ran (the model's mistake).
        traceback: That exception's formatted traceback (for a timeout: where the tool
            stood when it was abandoned), bounded; never sent to the model.
    """

    result: ToolResultPart
    error_type: str | None = None
    traceback: str | None = None
    refused: bool = False  # a ToolError: the tool declined the call, it did not fail


@dataclass(frozen=True, slots=True)
class _Ended:
    text: str
    is_error: bool = False
    error_type: str | None = None
    traceback: str | None = None
    refused: bool = False  # a ToolError: the tool declined the call, it did not fail


@dataclass(slots=True)
class _Thread:
    """The thread a sync tool runs in: ``started`` is set on the loop once it runs it."""

    loop: asyncio.AbstractEventLoop
    started: asyncio.Future[None]
    ident: int | None = None
    entered: float | None = None  # ``time.monotonic()`` as the thread called the tool
    abandoned: bool = False
    job: Job[Any] | None = None

    def abandon(self) -> None:
        self.abandoned = True
        if self.job is not None:
            abandon(self.job)


@dataclass(frozen=True, slots=True)
class _Awaitable:
    """A sync tool's return value that is awaited on the event loop."""

    value: Any


async def run_call(tool: Tool, call: ToolCallPart, arguments: Mapping[str, Any],
                   context: ToolContext, *, deadline: float | None,
                   max_output_chars: int) -> ToolOutcome:
    """Run ``tool`` for ``call``; every outcome but the send's cancellation is returned.

    ``deadline`` is in seconds (``None``: none), from now or, for a sync tool, from when
    its thread starts it; the call is abandoned there.
    """
    loop = asyncio.get_running_loop()
    thread = _Thread(loop, loop.create_future())
    task = asyncio.create_task(_attempt(tool, arguments, context, max_output_chars, thread),
                               name=f"power_loop tool {tool.name}")
    try:
        if deadline is not None and not inspect.iscoroutinefunction(tool.fn):
            # The clock starts when the thread does: a loaded machine's scheduling delay
            # is not the tool's time, and at the deadline its stack shows the tool.
            first: set[asyncio.Future[Any]] = {task, thread.started}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if not done and deadline is not None and thread.ident is not None:
            done = await _late_start_allowance(task, thread, deadline)
    except asyncio.CancelledError:
        thread.abandon()
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=CANCEL_GRACE)
        finally:
            _let_go(task, context)
        raise
    if not done:
        assert deadline is not None
        where = _where(task, thread)
        thread.abandon()
        task.cancel()
        _let_go(task, context)
        ended = _Ended(f"Error: tool {tool.name!r} did not finish within {deadline:g}s and was "
                       "abandoned.", True, "TimeoutError", where)
    elif task.cancelled():  # by the tool itself, or by someone else than the send
        ended = _Ended(f"Error: tool {tool.name!r} failed: CancelledError: its task was "
                       "cancelled", True, qualified_name(asyncio.CancelledError()))
    else:
        ended = task.result()
    if ended.error_type is not None:
        _log_failure(context, ended, None if done else deadline)
    return ToolOutcome(ToolResultPart(call.id, call.name, ended.text, ended.is_error),
                       ended.error_type, ended.traceback)


async def _late_start_allowance(task: asyncio.Task[Any], thread: _Thread,
                                deadline: float) -> set[asyncio.Task[Any]]:
    """Give back the time a sync tool's thread lost between saying it started and calling
    the tool (a busy machine can preempt it there, in a system call): its clock starts
    when the tool does. Once, and never more than ``deadline`` again."""
    entered = thread.entered
    extra = deadline if entered is None else entered + deadline - time.monotonic()
    if extra <= 0:
        return set()
    done, _ = await asyncio.wait({task}, timeout=min(extra, deadline))
    return done


async def _attempt(tool: Tool, arguments: Mapping[str, Any], context: ToolContext,
                   limit: int, thread: _Thread) -> _Ended:
    """The call, inside the task it runs in; ends only by returning or by cancellation."""
    try:
        kwargs = tool.bind(arguments, context)
        if inspect.iscoroutinefunction(tool.fn):
            value = await tool.fn(**kwargs)
        else:
            try:
                job = submit(_run_in_thread, tool, kwargs, limit, thread)
            except AbandonedThreadsFull as exc:
                return _Ended(f"Error: tool {tool.name!r} was not run: {exc.args[0]} earlier "
                              "sync tool calls were abandoned at their deadlines and are still "
                              "running in their threads, the most power_loop allows. Try "
                              "again later.", True, qualified_name(exc))
            thread.job = job
            ran = await job.future
            if not isinstance(ran, _Awaitable):
                return ran
            value = ran.value
        if inspect.isawaitable(value):
            value = await value
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the deadline, or the send is being stopped
        return _raised(tool.name, exc)  # a cancellation the tool met on its own
    except BaseException as exc:  # a tool's SystemExit is its failure, not the process's
        return _raised(tool.name, exc)
    return _rendered(tool.name, value, limit)


def _run_in_thread(tool: Tool, kwargs: dict[str, Any], limit: int,
                   thread: _Thread) -> _Ended | _Awaitable:
    # Everything is caught here, in the thread: an exception crossing into the event
    # loop's future can hang it (StopIteration) or escape the loop (SystemExit).
    thread.ident = threading.get_ident()
    try:
        thread.loop.call_soon_threadsafe(_set_started, thread.started)
        if thread.abandoned:  # the send was stopped before this thread got to the tool
            return _Ended(f"Error: tool {tool.name!r} was not run: its call was abandoned "
                          "before it started.", True, None)
        thread.entered = time.monotonic()
        try:
            value = tool.fn(**kwargs)
        except BaseException as exc:
            return _raised(tool.name, exc)
        try:
            awaitable = inspect.isawaitable(value)
        except BaseException as exc:
            return _unshowable(tool.name, exc)
        if awaitable:
            if thread.abandoned and inspect.iscoroutine(value):
                value.close()  # nobody will await it now: without this Python warns
            return _Awaitable(value)
        return _rendered(tool.name, value, limit)
    finally:
        thread.ident = None


def _set_started(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


def _raised(name: str, exc: BaseException) -> _Ended:
    """The error result for an exception the tool raised. Never raises."""
    try:
        detail = _message(exc)
        if isinstance(exc, ToolError) and detail:
            text = detail  # written for the model: verbatim
        else:
            text = f"Error: tool {name!r} failed: {_headline(exc)}{_group_summary(exc)}"
        text = clean(truncate(text, MAX_ERROR_CHARS))
    except BaseException:
        text = f"Error: tool {name!r} failed: {type_name(exc)}"
    if isinstance(exc, ToolError):
        # The tool's own answer to a bad request, written for the model: not a fault of
        # the tool, so an INFO line instead of a warning with the traceback (which
        # ToolCallFinished still carries).
        return _Ended(text, True, qualified_name(exc), format_traceback(exc), refused=True)
    return _Ended(text, True, qualified_name(exc), format_traceback(exc))


def _rendered(name: str, value: Any, limit: int) -> _Ended:
    """The result for a value the tool returned. Never raises."""
    try:
        problem = return_problem(value)
        if problem is not None:
            return _Ended(f"Error: tool {name!r} {problem}", True, "TypeError")
        return _Ended(render_output(value, limit))
    except BaseException as exc:
        return _unshowable(name, exc)


def _unshowable(name: str, exc: BaseException) -> _Ended:
    text = (f"Error: tool {name!r} returned a value that cannot be shown as text "
            f"({_headline(exc)})")
    return _Ended(clean(truncate(text, MAX_ERROR_CHARS)), True, qualified_name(exc),
                  format_traceback(exc))


def _message(exc: BaseException) -> str | None:
    """The exception's message; ``None`` when neither ``str()`` nor ``repr()`` gives one."""
    try:
        return text_of(exc)
    except BaseException:
        return None


def _headline(exc: BaseException, limit: int | None = None) -> str:
    """``Type: message``, or just ``Type`` when the message is empty."""
    detail = _message(exc)
    if detail is None:
        return f"{type_name(exc)}: <unprintable message>"
    return f"{type_name(exc)}: {detail[:limit]}" if detail else type_name(exc)


def _group_summary(exc: BaseException) -> str:
    if not isinstance(exc, BaseExceptionGroup):
        return ""
    inner = list(exc.exceptions[:_GROUP_SHOWN])
    shown = "; ".join(_headline(e, 200) for e in inner)
    more = len(exc.exceptions) - len(inner)
    return f" [{shown}{f'; {more} more' if more > 0 else ''}]"


def _where(task: asyncio.Task[Any], thread: _Thread) -> str | None:
    """Where an overdue call stands: its thread's stack, else its coroutines'."""
    ident = thread.ident
    if ident is not None:
        stack = format_thread_stack(sys._current_frames().get(ident))
    else:
        stack = format_suspended(task.get_coro())
    return f"abandoned at its deadline while at:\n{stack}" if stack else None


def _let_go(task: asyncio.Task[Any], context: ToolContext) -> None:
    """Leave ``task`` to end on its own; what it ends with is discarded."""
    if task.done():
        _discard(context, False, task)
        return
    _abandoned.add(task)
    task.add_done_callback(functools.partial(_discard, context, True))


def _discard(context: ToolContext, late: bool, task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit
    if late:
        log.info("tool %s (session %s, send #%d, call %s) ended after it was abandoned; "
                 "its outcome was discarded", context.tool_name, context.session_id,
                 context.send_index, clean(context.call_id))


def _log_failure(context: ToolContext, ended: _Ended, overran: float | None) -> None:
    if ended.refused and overran is None:
        log.info("tool %s answered call %s (session %s, send #%d) with a ToolError",
                 context.tool_name, clean(context.call_id), context.session_id,
                 context.send_index)
        return
    what = (f"did not finish within {overran:g}s" if overran is not None
            else f"failed with {ended.error_type}")
    log.warning("tool %s %s (session %s, send #%d, call %s)\n%s", context.tool_name, what,
                context.session_id, context.send_index, clean(context.call_id),
                ended.traceback or "(no traceback)",
                extra={"session_id": context.session_id, "send_index": context.send_index,
                       "call_id": clean(context.call_id), "tool_name": context.tool_name,
                       "error_type": ended.error_type})
