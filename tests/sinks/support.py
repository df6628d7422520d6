"""Shared pieces of the sink tests: every event type, generated; deep comparison; sinks
that fail or block on cue; a loop on the test's store with sinks."""

from __future__ import annotations

import dataclasses
import sys
import threading
import typing
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import UnionType
from typing import Any

from hypothesis import strategies as st

from power_loop import (
    AgentLoopConfig,
    Event,
    FoldError,
    LLMRateLimitError,
    LLMResponseError,
    LLMUnavailableError,
    Message,
    PowerLoopError,
    ScriptedLLM,
    SendResult,
    StatefulAgentLoop,
    Store,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from power_loop.events.sinks import Sink


def event_classes() -> list[type[Event]]:
    """Every concrete event class power_loop defines (new ones included automatically)."""
    found: list[type[Event]] = []
    stack: list[type[Event]] = [Event]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        # (``slots=True`` replaces a dataclass: the replaced class may linger unnamed.)
        if cls is not Event and cls.__module__.startswith("power_loop.") \
                and getattr(sys.modules[cls.__module__], cls.__name__, None) is cls:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


# -- generating every event ---------------------------------------------------------------

_SMALL_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),  # NUL, lone surrogates
    st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "\u2028\u2029", "é🙂", "\r\n\t"]),
)
_HUGE_TEXT = st.integers(100_000, 200_000).map(lambda n: "\x00é" * n + "\udc00")
ODD_TEXT = st.integers(0, 24).flatmap(lambda k: _HUGE_TEXT if k == 0 else _SMALL_TEXT)
"""Text of every kind: NUL, lone surrogates, line separators, emoji, and (1 in 25) huge."""
COUNTS = st.integers(0, 2**40)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53)
                    | st.floats(allow_nan=False) | ODD_TEXT,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(ODD_TEXT, inner, max_size=3), max_leaves=8)
USAGE = st.builds(Usage, COUNTS, COUNTS, COUNTS, COUNTS)
ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))])
ERRORS = st.one_of(
    st.builds(FoldError, ODD_TEXT),
    st.builds(LLMRateLimitError, ODD_TEXT, provider=ODD_TEXT,
              status_code=st.none() | st.integers(100, 599),
              retry_after=st.none() | st.floats(0, 1e6)),
    st.builds(LLMUnavailableError, ODD_TEXT, provider=st.just("openai")),
    st.builds(LLMResponseError, ODD_TEXT, provider=st.just("ScriptedLLM")),
    st.builds(PowerLoopError, ODD_TEXT),
)
CALL = st.builds(ToolCallPart, ODD_TEXT, ODD_TEXT, ODD_TEXT)
MESSAGES = st.one_of(
    st.builds(Message.user, ODD_TEXT),
    st.builds(lambda text, calls, usage: Message.assistant(text, calls, usage=usage.to_json(),
                                                           stop_reason="end_turn"),
              ODD_TEXT, st.lists(CALL, max_size=2), USAGE),
    st.builds(lambda c, n, out, err: Message.tool_result(ToolResultPart(c, n, out, err)),
              ODD_TEXT, ODD_TEXT, ODD_TEXT, st.booleans()),
)


def _for_hint(hint: Any, where: str) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        return st.one_of(*(_for_hint(a, where) for a in args))
    if hint is type(None):
        return st.none()
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: ODD_TEXT, int: st.integers(-2**63, 2**63), bool: st.booleans(),
        float: st.floats(allow_nan=False), Usage: USAGE, Any: JSON,
        datetime: st.datetimes(timezones=ZONES), Message: MESSAGES,
    }
    if hint in simple:
        return simple[hint]
    if origin is tuple and args[1:] == (Ellipsis,):
        return st.lists(_for_hint(args[0], where), max_size=3).map(tuple)
    if isinstance(hint, type) and issubclass(hint, PowerLoopError):
        return ERRORS
    if isinstance(hint, type) and issubclass(hint, Event):
        return st.deferred(lambda: st.one_of(*(events_of(c) for c in _leaf_classes())))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # SendResult, WaitRecord...
        return _dataclass(hint, where)
    raise AssertionError(f"{where}: no strategy for {hint!r}: teach tests/sinks/support.py "
                         "(and the JSONL codec) this type")


def _hints(cls: type) -> dict[str, Any]:
    names = {"PowerLoopError": PowerLoopError, "SendResult": SendResult, "Event": Event}
    return typing.get_type_hints(cls, localns=names)


def _dataclass(cls: type, where: str) -> st.SearchStrategy[Any]:
    hints = _hints(cls)
    return st.builds(cls, **{f.name: _for_hint(hints[f.name], f"{where}.{f.name}")
                             for f in dataclasses.fields(cls)})


def _leaf_classes() -> list[type[Event]]:
    """Event classes without an event inside (what a nested event field holds)."""
    return [c for c in event_classes()
            if not any(_hints(c)[f.name] is Event for f in dataclasses.fields(c))]


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Events of ``cls`` with every field generated from its declared type."""
    return _dataclass(cls, cls.__name__)


# -- comparing ----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A comparable form: errors by class, code, message and details; message meta kept."""
    if isinstance(value, PowerLoopError):
        return (type(value), value.code, value.message, plain(value.details),
                {k: plain(getattr(value, k)) for k in value.details if hasattr(value, k)})
    if isinstance(value, Message):
        return (value.role, value.parts, plain(dict(value.meta)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), *(plain(getattr(value, f.name))
                               for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# -- sinks that misbehave -----------------------------------------------------------------


class RaisingSink:
    """Raises on every event (and on flush)."""

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError(f"sink broken at {event.type}")

    def flush(self) -> None:
        raise RuntimeError("flush broken")

    def close(self) -> None:
        pass


class BlockingSink:
    """Blocks in its first ``handle`` until the test sets ``release``."""

    def __init__(self, *, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self.release = threading.Event()
        self.entered = threading.Event()
        self.seen: list[Event] = []

    def handle(self, event: Event) -> None:
        self.entered.set()
        self.release.wait()
        self.seen.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def loop_with(store: Store, llm: ScriptedLLM, sinks: Sequence[Sink],
              tools: Iterable[Tool] = (), **config: Any) -> StatefulAgentLoop:
    """A loop on the test's store feeding ``sinks``."""
    return StatefulAgentLoop(llm=llm, store=store, tools=list(tools),
                             config=AgentLoopConfig(sinks=sinks, **config))
