"""Generated hostile tool behaviour, through a real loop on every backend.

Each example is one send whose model calls one to three tools at once, each doing
something hostile: raising any kind of exception (with a message that is empty, odd,
huge or unprintable, raised at once, after an await, chained or while handling another),
returning what is hard to show (huge, cyclic, too deep, an int past the digit limit, an
unprintable object, bytes, lone surrogates and NUL, a coroutine, a generator), or
overrunning a short deadline (answering late, ignoring cancellation, blocking its thread).
For each: the send finishes normally, every stored result is the expected error (or the
rendered value) and bounded, ``ToolCallFinished`` carries the failure's type and
traceback, the next send works without ``resume`` and nothing is left pending.

``HYPOTHESIS_PROFILE=deep`` runs 1,000 random examples instead of the fixed 200.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    AgentLoopConfig,
    Event,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    ToolCallFinished,
    ToolError,
    Turn,
    call_tools,
)
from power_loop.llm.messages import decode_message
from power_loop.tools import make_tool
from power_loop.tools.registry import MAX_ERROR_CHARS
from power_loop.tools.rendering import MAX_TRACEBACK_CHARS
from power_loop.tools.running import _abandoned
from tests.loop.support import lease_is_free

PROFILES = {
    "ci": settings(max_examples=200, derandomize=True, database=None),
    "deep": settings(max_examples=1_000),
}
RUNS = settings(PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"]),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

LIMIT = 2_000  # the loop's max_tool_output_chars
OVERDUE = 0.1  # the deadline of the tools that overrun it
GUARD = 30.0  # a hang fails the example in this many seconds


def cleaned(text: str) -> str:
    """What valid text ``text`` becomes (lone surrogates replaced), computed independently."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def type_label(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else (
        f"{cls.__module__}.{cls.__qualname__}")


@dataclass
class Gate:
    """Holds the overrunning tools until the send has finished; sees them end."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    thread_release: threading.Event = field(default_factory=threading.Event)
    exited: list[threading.Event] = field(default_factory=list)

    def enter(self) -> threading.Event:
        done = threading.Event()
        self.exited.append(done)
        return done

    async def drain(self) -> None:
        self.release.set()
        self.thread_release.set()
        for done in self.exited:
            assert await asyncio.to_thread(done.wait, GUARD)
        pending = list(_abandoned)
        if pending:
            await asyncio.wait(pending, timeout=GUARD)
        assert not _abandoned


@dataclass
class Plan:
    """One call's behaviour and what the model and the application must see for it."""

    label: str
    sync: bool
    body: Callable[[Gate], Any]  # the tool's body (an async tool awaits a coroutine function)
    is_error: bool
    error_type: str | None
    check: Callable[[str], bool]
    overdue: bool = False
    in_traceback: str | None = None
    or_rendered: bool = False  # a bounded rendering is right too (depends on the stack left)

    def __repr__(self) -> str:
        return f"<{'sync' if self.sync else 'async'} {self.label}>"

    @property
    def tool_name(self) -> str:
        return f"{'overdue' if self.overdue else 'hostile'}_{'sync' if self.sync else 'async'}"


# -- raising -------------------------------------------------------------------------------


class AppError(Exception):
    """An application's own exception."""


class AppBase(BaseException):
    """An application's own BaseException."""


KINDS: list[type[BaseException]] = [
    ValueError, RuntimeError, TimeoutError, StopIteration, StopAsyncIteration, GeneratorExit,
    SystemExit, KeyboardInterrupt, asyncio.CancelledError, AppError, AppBase, ToolError,
    ExceptionGroup, BaseExceptionGroup,
]
_odd_classes: dict[tuple[type[BaseException], str], type[BaseException]] = {}


def odd_class(base: type[BaseException], style: str) -> type[BaseException]:
    """``base`` with a ``__str__`` that raises, or that returns something not text."""
    key = (base, style)
    if key not in _odd_classes:
        def raising(self: BaseException) -> str:
            raise RuntimeError("__str__ is broken")

        def not_text(self: BaseException) -> Any:
            return b"bytes, not str"

        name = f"{style.title().replace('_', '')}{base.__name__}"
        _odd_classes[key] = type(name, (base,), {
            "__str__": raising if style == "raising" else not_text,
            "__repr__": raising if style == "raising" else not_text,
            "__module__": __name__, "__qualname__": name})
    return _odd_classes[key]


@dataclass(frozen=True)
class Message:
    raw: str
    style: str  # plain, odd (surrogate and NUL), huge, raising, not_text


MESSAGES = st.one_of(
    st.text(max_size=30).map(lambda t: Message(t, "plain")),
    st.text(max_size=20).map(lambda t: Message(t + "\ud800 \x00\udfff", "odd")),
    st.integers(MAX_ERROR_CHARS + 1, 200_000).map(lambda n: Message("m" * n, "huge")),
    st.sampled_from(["raising", "not_text"]).map(lambda s: Message("hidden", s)),
)
POINTS = ["at_once", "after_await", "chained", "while_handling"]


def make_exception(kind: type[BaseException], message: Message) -> BaseException:
    if kind is ExceptionGroup:
        inner: list[Exception] = [KeyError("k")]
        first = make_exception(ValueError, message)
        assert isinstance(first, Exception)
        return ExceptionGroup("grouped", [first, *inner])
    if kind is BaseExceptionGroup:
        return BaseExceptionGroup("grouped", [KeyboardInterrupt(),
                                              make_exception(AppError, message)])
    cls = kind if message.style not in ("raising", "not_text") else odd_class(kind,
                                                                               message.style)
    return cls(message.raw)


def raising_plan(kind: type[BaseException], message: Message, point: str, sync: bool) -> Plan:
    def throw() -> None:
        exc = make_exception(kind, message)
        if point == "chained":
            raise exc from ValueError("the cause")
        if point == "while_handling":
            empty: dict[str, int] = {}
            try:
                empty["missing"]
            except KeyError:
                raise exc  # noqa: B904
        raise exc

    def sync_body(gate: Gate) -> None:
        throw()

    async def async_body(gate: Gate) -> None:
        if point == "after_await":
            await asyncio.sleep(0)
        throw()

    sample = make_exception(kind, message)
    # A coroutine cannot raise StopIteration: Python makes it a RuntimeError.
    raised = RuntimeError if isinstance(sample, StopIteration) and not sync else type(sample)
    printable = message.style in ("plain", "odd", "huge")
    group = isinstance(sample, BaseExceptionGroup)
    verbatim = isinstance(sample, ToolError) and printable and bool(message.raw)
    prefix = (f"Error: tool 'hostile_{'sync' if sync else 'async'}' failed: "
              f"{'RuntimeError' if raised is RuntimeError else type(sample).__name__}")

    def check(content: str) -> bool:
        if not 0 < len(content) <= MAX_ERROR_CHARS:
            return False
        if verbatim:  # the model reads a ToolError's message as it is
            if message.style == "huge":
                return content.startswith("m" * 100) and "truncated" in content
            return content == cleaned(message.raw)
        if not content.startswith(prefix):
            return False
        if message.style == "huge" and not group and raised is not RuntimeError:
            return "truncated" in content
        if printable and raised is not RuntimeError and not group:
            detail = cleaned(message.raw)
            return content == (f"{prefix}: {detail}" if detail else prefix)
        return True

    return Plan(f"raise {kind.__name__} ({message.style}, {point})", sync,
                sync_body if sync else async_body, True, type_label(raised), check,
                in_traceback="sync_body" if sync else "async_body")


raising_plans = st.builds(raising_plan, st.sampled_from(KINDS), MESSAGES,
                          st.sampled_from(POINTS), st.booleans())


# -- returning -----------------------------------------------------------------------------


class Opaque:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _cyclic() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _deep() -> list[Any]:
    nested: list[Any] = []
    for _ in range(100_000):  # past the recursion limit, even as Hypothesis raises it
        nested = [nested]
    return nested


async def _seven() -> int:
    return 7


def _generator() -> Iterator[int]:
    yield 1


async def _async_generator() -> AsyncIterator[int]:
    yield 1


def _bounded(content: str) -> bool:
    return len(content) <= LIMIT and "truncated: showing" in content


# label, make the value, error type (None: rendered), check on the text
AWKWARD: list[tuple[str, Callable[[], Any], str | None, Callable[[str], bool]]] = [
    ("none", lambda: None, None, lambda c: c == ""),
    ("surrogates and NUL", lambda: "a\ud800b\x00c\ud83d\ude00", None,
     lambda c: c == "a\ufffdb\x00c\U0001f600"),
    ("huge text", lambda: "x" * 1_000_000, None, _bounded),
    ("bytes", lambda: b"\xffok\x00", None, lambda c: c == "\ufffdok\x00"),
    ("huge bytes", lambda: b"y" * 1_000_000, None, _bounded),
    ("nan and inf", lambda: [float("nan"), float("inf")], None, lambda c: c == "[NaN, Infinity]"),
    ("cyclic", _cyclic, None, lambda c: c == "[1, [...]]"),
    ("huge list", lambda: list(range(200_000)), None, _bounded),
    ("digit limit int", lambda: 10 ** 5000, "ValueError", lambda c: "Exceeds the limit" in c),
    ("nested digit limit int", lambda: {"n": [-(10 ** 5000)]}, "ValueError",
     lambda c: "Exceeds the limit" in c),
    ("unprintable", Opaque, "RuntimeError", lambda c: "cannot be shown as text" in c),
    ("nested unprintable", lambda: [1, {"o": Opaque()}], "RuntimeError",
     lambda c: "cannot be shown as text" in c),
    ("too deep", _deep, "RecursionError",
     lambda c: "cannot be shown as text" in c or _bounded(c)),
    ("coroutine", _seven, None, lambda c: c == "7"),
    ("generator", _generator, "TypeError", lambda c: "does not iterate" in c),
    ("async generator", _async_generator, "TypeError", lambda c: "does not iterate" in c),
]

JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=15)


def returning_plan(case: tuple[str, Callable[[], Any], str | None, Callable[[str], bool]],
                   sync: bool) -> Plan:
    label, make, error_type, check = case
    # Too deep for the recursion limit, or only as deep as the output cap lets the JSON
    # encoder go before it stops (Hypothesis raises the limit while it runs a test).
    return Plan(f"return {label}", sync, lambda gate: make(), error_type is not None,
                error_type, lambda c: check(c) and len(c) <= max(LIMIT, MAX_ERROR_CHARS),
                or_rendered=label == "too deep")


def json_plan(value: Any, sync: bool) -> Plan:
    if value is None or isinstance(value, str):
        expected = value or ""  # text is shown as it is, None as nothing
    else:
        expected = json.dumps(value, ensure_ascii=False)
    return Plan("return JSON", sync, lambda gate: value, False, None,
                lambda c: c == expected if len(expected) <= LIMIT else _bounded(c))


awkward_plans = st.builds(returning_plan, st.sampled_from(AWKWARD), st.booleans())
json_plans = st.builds(json_plan, JSONABLE, st.booleans())


# -- overrunning the deadline ----------------------------------------------------------------


async def late(gate: Gate) -> str:
    done = gate.enter()
    try:
        try:
            await gate.release.wait()
        except asyncio.CancelledError:
            await gate.release.wait()  # ignores the cancellation and answers anyway
        return "late answer"
    finally:
        done.set()


async def stubborn(gate: Gate) -> str:
    done = gate.enter()
    try:
        while not gate.release.is_set():
            try:
                await gate.release.wait()
            except asyncio.CancelledError:
                continue
        return "never read"
    finally:
        done.set()


async def late_raise(gate: Gate) -> str:
    done = gate.enter()
    try:
        try:
            await gate.release.wait()
        except asyncio.CancelledError:
            await gate.release.wait()
        raise KeyboardInterrupt  # late, and fatal if it escaped its task
    finally:
        done.set()


def blocking(gate: Gate) -> str:
    done = gate.enter()
    try:
        gate.thread_release.wait(GUARD)
        return "blocked"
    finally:
        done.set()


def blocking_raise(gate: Gate) -> str:
    done = gate.enter()
    try:
        gate.thread_release.wait(GUARD)
        raise StopIteration
    finally:
        done.set()


def blocking_coroutine(gate: Gate) -> Any:
    done = gate.enter()
    try:
        gate.thread_release.wait(GUARD)
        return _seven()  # closed unawaited by the runner: it was abandoned
    finally:
        done.set()


OVERRUNS: list[tuple[Callable[[Gate], Any], bool]] = [
    (late, False), (stubborn, False), (late_raise, False),
    (blocking, True), (blocking_raise, True), (blocking_coroutine, True),
]


def overdue_plan(overrun: tuple[Callable[[Gate], Any], bool]) -> Plan:
    body, sync = overrun
    name = f"overdue_{'sync' if sync else 'async'}"
    expected = f"Error: tool '{name}' did not finish within {OVERDUE:g}s and was abandoned."
    return Plan(f"overrun {body.__name__}", sync, body, True, "TimeoutError",
                lambda c: c == expected, overdue=True, in_traceback=body.__name__)


overdue_plans = st.builds(overdue_plan, st.sampled_from(OVERRUNS))

# Raising three times as often as plain JSON: it has the most ways to go wrong.
CATEGORIES: dict[str, st.SearchStrategy[Plan]] = {
    "raise": raising_plans, "awkward": awkward_plans, "overrun": overdue_plans,
    "json": json_plans}
PLANS = st.lists(st.sampled_from(["raise"] * 3 + ["awkward"] * 2 + ["overrun"] * 2 + ["json"])
                 .flatmap(CATEGORIES.__getitem__), min_size=1, max_size=3)


# -- the loop ------------------------------------------------------------------------------


@dataclass
class Stage:
    """The current example: its plans, its gate, the events the loop emitted."""

    plans: list[Plan] = field(default_factory=list)
    gate: Gate | None = None
    events: list[Event] = field(default_factory=list)


def build_loop(store: Store, stage: Stage) -> StatefulAgentLoop:
    def hostile_sync(slot: int) -> Any:
        """A sync tool doing whatever the example planned."""
        assert stage.gate is not None
        return stage.plans[slot].body(stage.gate)

    async def hostile_async(slot: int) -> Any:
        """An async tool doing whatever the example planned."""
        assert stage.gate is not None
        body = stage.plans[slot].body
        if inspect.iscoroutinefunction(body):
            return await body(stage.gate)
        return body(stage.gate)  # returned as it is, even an awaitable

    def script(request: LLMRequest) -> Turn:
        last = request.messages[-1]
        if last.role == "tool":
            return Turn(text="done")
        if last.text == "run":
            return call_tools(*((p.tool_name, {"slot": i}) for i, p in enumerate(stage.plans)))
        return Turn(text="yes")

    tools = [make_tool(hostile_sync, timeout=GUARD), make_tool(hostile_async, timeout=GUARD),
             make_tool(hostile_sync, name="overdue_sync", timeout=OVERDUE),
             make_tool(hostile_async, name="overdue_async", timeout=OVERDUE)]
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store, tools=tools,
                             config=AgentLoopConfig(max_tool_output_chars=LIMIT,
                                                    on_event=stage.events.append))


@pytest.fixture
async def staged(store: Store) -> AsyncIterator[tuple[StatefulAgentLoop, Stage]]:
    stage = Stage()
    yield build_loop(store, stage), stage


@pytest.mark.timeout(900)
@RUNS
@given(plans=PLANS)
async def test_no_tool_behaviour_wedges_a_send(staged: tuple[StatefulAgentLoop, Stage],
                                               plans: list[Plan]) -> None:
    loop, stage = staged
    store = loop.store
    for plan in plans:
        event(plan.label.split(" (")[0])
        event(f"{plan.label.split(' ')[0]} from a {'sync' if plan.sync else 'async'} tool")
        for detail in plan.label.rstrip(")").partition(" (")[2].split(", "):
            if detail:
                event(f"raised with {detail}")
    event(f"{len(plans)} call(s) at once")
    stage.plans, stage.gate, stage.events[:] = plans, Gate(), []
    sid = await loop.new_session()
    try:
        async with asyncio.timeout(GUARD):
            result = await loop.send("run", session_id=sid)
    finally:
        await stage.gate.drain()
    assert (result.status, result.final_text) == ("done", "done")

    calls = result.messages[1].tool_calls
    results = {r.call_id: r for m in result.messages[2:-1] for r in m.tool_results}
    finished = {e.call_id: e for e in stage.events if isinstance(e, ToolCallFinished)}
    kept = [decode_message(r.role, r.body) for r in await store.read_messages(sid)]
    # What the database kept is what the model reads, on every backend.
    assert {r.call_id: r for m in kept for r in m.tool_results} == results
    for plan, call in zip(plans, calls, strict=True):
        got, seen = results[call.id], finished[call.id]
        rendered = plan.or_rendered and not got.is_error
        assert got.is_error == (plan.is_error and not rendered) == seen.is_error, (
            plan, got.content[:300])
        assert plan.check(got.content), (plan, got.content[:300])
        assert len(got.content) <= max(LIMIT, MAX_ERROR_CHARS)
        got.content.encode("utf-8")  # valid text for every database and provider
        assert seen.output == got.content
        assert seen.error_type == (None if rendered else plan.error_type), (
            plan, seen.error_type)
        if plan.in_traceback is not None:
            # Holds however loaded the machine: a sync tool gets a thread at once (never
            # queued behind abandoned ones) and its deadline counts from when that thread
            # starts it, so the stack taken at the deadline is inside the body.
            assert seen.traceback is not None and plan.in_traceback in seen.traceback, (
                plan, seen.traceback)
        if seen.traceback is not None:
            assert len(seen.traceback) <= MAX_TRACEBACK_CHARS
            seen.traceback.encode("utf-8")

    again = await loop.send("still there?", session_id=sid)
    assert (again.status, again.final_text) == ("done", "yes")
    session = await store.get_session(sid)
    assert session.pending_send is None and await lease_is_free(store, sid)
