"""No tool behaviour can wedge a send: each named case, one at a time, at the registry.

What a tool raises, returns or fails to finish becomes an error result (or the rendered
value) with the failure's type and traceback; only the caller's cancellation propagates.
No backend is needed here: tests/loop/test_hostile_tools_loop.py runs the named cases
through a real loop on every backend, tests/loop/test_hostile_tools_property.py
generates them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from power_loop import (
    InvalidArgumentError,
    PowerLoopError,
    ToolCallPart,
    ToolContext,
    ToolError,
    ToolRegistry,
    tool,
)
from power_loop.tools import ToolLimits, make_tool
from power_loop.tools.registry import MAX_ERROR_CHARS, ToolOutcome
from power_loop.tools.rendering import MAX_TRACEBACK_CHARS
from power_loop.tools.running import _abandoned
from power_loop.tools.tool import Tool

LIMITS = ToolLimits(timeout=5.0, max_output_chars=1_000)
SHORT = ToolLimits(timeout=0.05, max_output_chars=1_000)
GUARD = 30.0  # a hang fails the test in this many seconds instead of the suite's timeout


def context(name: str) -> ToolContext:
    return ToolContext(session_id="s", send_index=0, call_id="c1", tool_name=name,
                       idempotency_key=ToolContext.key_for("s", 0, "c1"))


async def run(fn: Callable[..., Any] | Tool, limits: ToolLimits = LIMITS) -> ToolOutcome:
    built = fn if isinstance(fn, Tool) else make_tool(fn)
    async with asyncio.timeout(GUARD):
        return await ToolRegistry([built]).run(ToolCallPart("c1", built.name, "{}"),
                                               context(built.name), limits)


def assert_failed(outcome: ToolOutcome, error_type: str, *in_traceback: str) -> None:
    assert outcome.result.is_error
    assert 0 < len(outcome.result.content) <= MAX_ERROR_CHARS
    assert outcome.error_type == error_type
    assert outcome.traceback is not None and len(outcome.traceback) <= MAX_TRACEBACK_CHARS
    for text in in_traceback:
        assert text in outcome.traceback, outcome.traceback
    outcome.result.content.encode("utf-8")  # valid text, whatever the tool raised


class MyBase(BaseException):
    """A BaseException of the application's own."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no str for you")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


class NotText(Exception):
    def __str__(self) -> Any:
        return 42


# -- what a tool raises ------------------------------------------------------------------


async def test_stop_iteration_from_a_sync_tool_is_an_error_not_a_hang() -> None:
    # asyncio cannot set StopIteration on a future: run naively, this send never ends.
    def advance() -> str:
        """Take the next item."""
        return next(iter([]))

    outcome = await run(advance)
    assert_failed(outcome, "StopIteration", "in advance")
    assert outcome.result.content == "Error: tool 'advance' failed: StopIteration"


async def test_invoke_raises_what_the_tool_raises_without_hanging() -> None:
    def advance() -> str:
        """Take the next item."""
        raise StopIteration

    with pytest.raises(RuntimeError) as caught:
        async with asyncio.timeout(GUARD):
            await make_tool(advance).invoke({}, context("advance"))
    assert isinstance(caught.value.__cause__, StopIteration)


def _raise(exc: BaseException) -> tuple[Callable[[], str], Callable[[], Any]]:
    def sync_tool() -> str:
        """Fail."""
        raise exc

    async def async_tool() -> str:
        """Fail."""
        await asyncio.sleep(0)
        raise exc

    return sync_tool, async_tool


BASE_EXCEPTIONS: list[tuple[BaseException, str, str]] = [
    (SystemExit(3), "SystemExit", "SystemExit: 3"),
    (KeyboardInterrupt(), "KeyboardInterrupt", "KeyboardInterrupt"),
    (GeneratorExit(), "GeneratorExit", "GeneratorExit"),
    (StopAsyncIteration("done"), "StopAsyncIteration", "StopAsyncIteration: done"),
    (MyBase("mine"), f"{__name__}.MyBase", "MyBase: mine"),
    (ExceptionGroup("two", [ValueError("a"), KeyError("b")]), "ExceptionGroup",
     "ExceptionGroup: two (2 sub-exceptions) [ValueError: a; KeyError: 'b']"),
    (BaseExceptionGroup("stop", [KeyboardInterrupt(), SystemExit(1)]), "BaseExceptionGroup",
     "BaseExceptionGroup: stop (2 sub-exceptions) [KeyboardInterrupt; SystemExit: 1]"),
]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize(("exc", "error_type", "shown"), BASE_EXCEPTIONS,
                         ids=[e[1] for e in BASE_EXCEPTIONS])
async def test_any_base_exception_a_tool_raises_is_an_error_result(
        sync: bool, exc: BaseException, error_type: str, shown: str) -> None:
    fn = _raise(exc)[0 if sync else 1]
    outcome = await run(make_tool(fn, name="failing"))
    assert_failed(outcome, error_type, "in sync_tool" if sync else "in async_tool")
    assert outcome.result.content == f"Error: tool 'failing' failed: {shown}"


async def test_stop_iteration_from_an_async_tool_is_what_python_makes_of_it() -> None:
    async def advance() -> str:
        """Take the next item."""
        raise StopIteration

    outcome = await run(advance)
    # A coroutine cannot raise StopIteration: Python turns it into a RuntimeError.
    assert_failed(outcome, "RuntimeError", "StopIteration", "in advance")
    assert "coroutine raised StopIteration" in outcome.result.content


@pytest.mark.parametrize("exc", [Unprintable(), NotText()], ids=["raising", "not_text"])
async def test_an_exception_that_cannot_be_printed(exc: Exception) -> None:
    outcome = await run(make_tool(_raise(exc)[0], name="odd"))
    assert_failed(outcome, f"{__name__}.{type(exc).__name__}", "in sync_tool")
    assert outcome.result.content.startswith(f"Error: tool 'odd' failed: {type(exc).__name__}")


async def test_a_tool_error_is_sent_verbatim_and_typed() -> None:
    def refuse() -> str:
        """Refuse."""
        raise ToolError("amount must be positive\ud800")

    outcome = await run(refuse)
    assert_failed(outcome, "power_loop.errors.ToolError", "in refuse")
    assert outcome.result.content == "amount must be positive\ufffd"
    assert isinstance(ToolError("x"), PowerLoopError) and ToolError.code == "tool_error"

    def bare() -> str:
        """Refuse without a word."""
        raise ToolError

    assert (await run(bare)).result.content == "Error: tool 'bare' failed: ToolError"


async def test_a_tools_own_cancellations_are_its_failures() -> None:
    async def cancels_itself() -> str:
        """Cancel my own task."""
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)
        return "unreachable"

    async def meets_one() -> str:
        """Await a future someone else cancelled."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future

    own = await run(cancels_itself)
    assert own.result.is_error and own.error_type == "asyncio.exceptions.CancelledError"
    met = await run(meets_one)
    assert_failed(met, "asyncio.exceptions.CancelledError", "in meets_one")


@dataclass
class Refusing:
    size: int

    def __post_init__(self) -> None:
        raise SystemExit("not this size")


async def test_an_argument_that_fails_to_build_is_an_error_result() -> None:
    def pack(box: Refusing) -> str:
        """Pack a box."""
        return "packed"

    built = make_tool(pack)
    async with asyncio.timeout(GUARD):
        outcome = await ToolRegistry([built]).run(
            ToolCallPart("c1", "pack", '{"box": {"size": 3}}'), context("pack"), LIMITS)
    assert_failed(outcome, "SystemExit", "__post_init__")
    assert outcome.result.content == "Error: tool 'pack' failed: SystemExit: not this size"


# -- what a tool returns -----------------------------------------------------------------


def _returning(value: Any) -> Tool:
    def returns() -> Any:
        """Return something."""
        return value

    return make_tool(returns)


async def test_an_int_beyond_the_digit_limit_is_an_error_result() -> None:
    for value in (10 ** 5000, [1, {"n": -(10 ** 5000)}]):
        outcome = await run(_returning(value))
        assert_failed(outcome, "ValueError")
        assert outcome.result.content.startswith(
            "Error: tool 'returns' returned a value that cannot be shown as text (ValueError: "
            "Exceeds the limit")


class Opaque:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ReprOnly:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "ReprOnly()"


def _cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _cyclic_dict() -> dict[str, Any]:
    found: dict[str, Any] = {}
    found["self"] = found
    return found


@pytest.mark.parametrize(("value", "shown"), [
    (None, ""),
    ("a\ud800b\x00c\ud83d\ude00", "a\ufffdb\x00c\U0001f600"),
    (b"\xff\xfeok", "\ufffd\ufffdok"),
    ([float("nan"), float("inf"), -float("inf")], "[NaN, Infinity, -Infinity]"),
    (_cyclic_list(), "[1, [...]]"),
    (_cyclic_dict(), "{'self': {...}}"),
    ({(1, 2): "tuple key"}, "{(1, 2): 'tuple key'}"),
    ({"x": ReprOnly()}, '{"x": "ReprOnly()"}'),
    ({"set": {3}, "bytes": b"hi"}, '{"set": [3], "bytes": "hi"}'),
], ids=["none", "surrogates_nul", "bytes", "nan", "cyclic_list", "cyclic_dict",
        "tuple_keys", "repr_only", "set_and_bytes"])
async def test_awkward_values_are_rendered(value: Any, shown: str) -> None:
    outcome = await run(_returning(value))
    assert outcome.result.content == shown
    assert not outcome.result.is_error and outcome.error_type is None


@pytest.mark.parametrize("value", [Opaque(), [Opaque()], {"deep": Opaque()}],
                         ids=["top", "in_list", "in_dict"])
async def test_a_value_that_cannot_be_printed_is_an_error_result(value: Any) -> None:
    outcome = await run(_returning(value))
    assert_failed(outcome, "RuntimeError")
    assert "returned a value that cannot be shown as text" in outcome.result.content


async def test_deep_and_huge_values_are_bounded() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    outcome = await run(_returning(deep))
    assert_failed(outcome, "RecursionError")

    huge = await run(_returning(list(range(1_000_000))))
    assert not huge.result.is_error and len(huge.result.content) <= 1_000
    assert huge.result.content.startswith("[0, 1, 2, ")
    assert "truncated: showing" in huge.result.content and "of at least" in huge.result.content
    text = await run(_returning("x" * 10_000_000))
    assert len(text.result.content) <= 1_000 and "of 10,000,000 characters" in text.result.content
    raw = await run(_returning(b"y" * 10_000_000))
    assert len(raw.result.content) <= 1_000 and raw.result.content.startswith("yyy")


async def test_awaitables_are_awaited_once_and_iterators_refused() -> None:
    async def compute() -> int:
        return 7

    async def again() -> Any:
        return compute()

    def sync_returns_coroutine() -> Any:
        """Return an awaitable."""
        return compute()

    async def async_returns_coroutine() -> Any:
        """Return an awaitable from a coroutine."""
        return compute()

    def returns_awaitable_awaitable() -> Any:
        """Return an awaitable of an awaitable."""
        return again()

    def returns_generator() -> Any:
        """Return a generator."""
        return (i for i in range(3))

    def returns_async_generator() -> Any:
        """Return an async generator."""
        async def numbers() -> AsyncIterator[int]:
            yield 1
        return numbers()

    assert (await run(sync_returns_coroutine)).result.content == "7"
    assert (await run(async_returns_coroutine)).result.content == "7"
    nested = await run(returns_awaitable_awaitable)
    assert nested.result.is_error and nested.error_type == "TypeError"
    assert "again awaitable" in nested.result.content
    gc.collect()  # the refused coroutine was closed: no "never awaited" warning here
    for fn in (returns_generator, returns_async_generator):
        refused = await run(fn)
        assert refused.result.is_error and refused.error_type == "TypeError"
        assert "which power_loop does not iterate" in refused.result.content


def test_generator_functions_are_refused_when_declared() -> None:
    def numbers() -> Any:
        """Count."""
        yield 1

    async def async_numbers() -> Any:
        """Count."""
        yield 1

    for fn in (numbers, async_numbers):
        with pytest.raises(InvalidArgumentError, match="generator function"):
            tool(fn)


# -- tools that overrun their deadline ---------------------------------------------------


async def test_a_late_answer_is_discarded() -> None:
    release, ended = asyncio.Event(), asyncio.Event()

    async def late() -> str:
        """Answer after the deadline."""
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancellation, and answers anyway
        ended.set()
        return "late answer"

    outcome = await run(late, SHORT)
    assert outcome.result.content == (
        "Error: tool 'late' did not finish within 0.05s and was abandoned.")
    assert outcome.error_type == "TimeoutError" and outcome.traceback is not None
    assert "in late" in outcome.traceback  # where it stood when abandoned
    assert len(_abandoned) == 1
    release.set()
    await ended.wait()
    await asyncio.sleep(0)  # its done-callback runs
    assert len(_abandoned) == 0


async def test_a_late_exception_is_retrieved_quietly(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    finished: list[asyncio.Task[Any]] = []

    async def explodes_late() -> str:
        """Raise after the deadline."""
        finished.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await asyncio.sleep(GUARD)
        except asyncio.CancelledError:
            await release.wait()
        raise KeyboardInterrupt  # would stop the event loop if it escaped its task

    outcome = await run(explodes_late, SHORT)
    assert outcome.error_type == "TimeoutError"
    release.set()
    await asyncio.wait(finished)
    assert finished[0].done() and not finished[0].cancelled()
    del finished[:]
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_a_tool_that_never_returns_does_not_hold_the_caller() -> None:
    release = asyncio.Event()

    async def stubborn() -> str:
        """Never give up."""
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallow every cancellation
        return "never read"

    outcome = await run(stubborn, SHORT)
    assert outcome.error_type == "TimeoutError" and outcome.result.is_error
    [abandoned] = _abandoned
    assert not abandoned.done()
    release.set()
    await asyncio.wait([abandoned])


async def test_a_sync_tool_blocking_its_thread_is_abandoned() -> None:
    release = threading.Event()

    def blocks() -> str:
        """Block the thread."""
        release.wait(GUARD)
        return "too late"

    try:
        outcome = await run(blocks, SHORT)
    finally:
        release.set()
    assert outcome.result.is_error and outcome.error_type == "TimeoutError"
    assert outcome.traceback is not None and "in blocks" in outcome.traceback


async def test_a_tools_own_timeout_error_is_not_the_deadline() -> None:
    async def upstream() -> str:
        """Time out on my own."""
        raise TimeoutError("upstream")

    outcome = await run(upstream, SHORT)
    assert_failed(outcome, "TimeoutError", "in upstream")
    assert outcome.result.content == "Error: tool 'upstream' failed: TimeoutError: upstream"


async def test_cancelling_the_caller_propagates_even_past_a_stubborn_tool() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> str:
        """Ignore cancellation."""
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return "never read"

    task = asyncio.create_task(run(stubborn))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # after at most CANCEL_GRACE seconds
    [abandoned] = _abandoned
    release.set()
    await asyncio.wait([abandoned])


async def test_a_tool_error_is_logged_as_information_not_as_a_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse() -> str:
        raise ToolError("no such file; list the folder first")

    def crash() -> str:
        raise KeyError("boom")

    with caplog.at_level(logging.INFO, logger="power_loop.tools"):
        refused = await run(refuse)
        crashed = await run(crash)
    assert refused.traceback is not None and crashed.traceback is not None
    levels = [(r.levelno, "Traceback" in r.getMessage()) for r in caplog.records]
    assert levels == [(logging.INFO, False), (logging.WARNING, True)]
