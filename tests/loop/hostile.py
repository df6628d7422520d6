"""Hostile model services and the checks every hostile case ends with.

A :class:`HostileLLM` plays one scripted behaviour per model call (a function from the
request to an async iterator of whatever it likes, raising whatever it likes), then
answers plainly. :func:`check_session_after` asserts what must hold after any hostile
send: the stored history decodes and pairs every call with a result, the lease is free,
and the next send works (after the typed ``SendPendingError`` and a ``resume`` or
``abort`` when the failed call left the send pending by design).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from power_loop import (
    LLMRequest,
    LLMResponse,
    Message,
    PowerLoopError,
    SendPendingError,
    SendResult,
    StatefulAgentLoop,
    StopReason,
    Store,
    TextPart,
    Usage,
)
from power_loop.llm.messages import decode_message
from power_loop.loop.window import check_next
from tests.loop.support import lease_is_free

Behaviour = Callable[[LLMRequest], AsyncIterator[Any]]

SEND_TIMEOUT = 30.0
"""Seconds a hostile send may take before the test calls it a hang (it takes far less)."""


class HostileLLM:
    """Plays ``behaviours`` one per call, then answers ``"fine"``."""

    model = "hostile"

    def __init__(self, behaviours: Sequence[Behaviour] = ()) -> None:
        self._behaviours = list(behaviours)
        self.requests: list[LLMRequest] = []

    def play(self, *behaviours: Behaviour) -> None:
        """Queue more behaviours."""
        self._behaviours.extend(behaviours)

    def stream(self, request: LLMRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        if self._behaviours:
            return self._behaviours.pop(0)(request)
        return answer(Message("assistant", (TextPart("fine"),)))(request)


def answer(message: Any, usage: Any = None, stop: Any = StopReason.END_TURN,
           model: Any = "hostile", before: Sequence[Any] = ()) -> Behaviour:
    """A behaviour yielding ``before`` then one LLMResponse built from anything at all."""

    async def run(request: LLMRequest) -> AsyncIterator[Any]:
        for item in before:
            yield item
        yield LLMResponse(message, Usage() if usage is None else usage, stop, model)

    return run


def raising(error: BaseException, before: Sequence[Any] = ()) -> Behaviour:
    """A behaviour yielding ``before`` then raising ``error``."""

    async def run(request: LLMRequest) -> AsyncIterator[Any]:
        for item in before:
            yield item
        raise error

    return run


def yielding(items: Sequence[Any]) -> Behaviour:
    """A behaviour yielding exactly ``items``."""

    async def run(request: LLMRequest) -> AsyncIterator[Any]:
        for item in items:
            yield item

    return run


async def send_bounded(loop: StatefulAgentLoop, text: str, sid: str) -> SendResult | BaseException:
    """Send; return the result or the exception (anything but a PowerLoopError fails)."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            return await loop.send(text, session_id=sid)
    except PowerLoopError as exc:
        return exc


async def assert_history_valid(store: Store, sid: str) -> list[Message]:
    """Every stored message decodes, and each tool call is answered before what follows."""
    records = await store.read_messages(sid)
    messages = [decode_message(r.role, r.body) for r in records]
    open_calls: list[str] = []
    seen: set[str] = set()
    for i, message in enumerate(messages):
        check_next(message, open_calls, seen, sid, i)
    assert not open_calls or (await store.get_session(sid)).pending_send is not None
    return messages


def assert_request_pairs(request: LLMRequest) -> None:
    """Every tool call of a request is answered, at once and in order."""
    open_calls: list[str] = []
    seen: set[str] = set()
    for i, message in enumerate(request.messages):
        check_next(message, open_calls, seen, "request", i)
    assert not open_calls


async def check_session_after(loop: StatefulAgentLoop, llm: HostileLLM, store: Store,
                              sid: str, outcome: SendResult | BaseException,
                              recover: str = "abort") -> str:
    """Assert the session is usable after a hostile send; return how it ended.

    ``done``: the send finished; ``error``: it finished and raised (structured output);
    ``cancelled``; ``pending``: it failed and was left pending (the next send raised
    SendPendingError; ``recover`` - ``abort`` or ``resume`` - then ended it).
    """
    messages = await assert_history_valid(store, sid)
    assert await lease_is_free(store, sid)
    session = await store.get_session(sid)
    ended = ("done" if isinstance(outcome, SendResult)
             else "cancelled" if isinstance(outcome, asyncio.CancelledError) else "error")
    if session.pending_send is not None:
        assert isinstance(outcome, PowerLoopError), outcome
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await loop.send("next", session_id=sid)
        except SendPendingError as exc:
            assert exc.send_index == session.pending_send
            assert "resume" in exc.message and "abort" in exc.message
        else:  # pragma: no cover - the assertion explains
            raise AssertionError("a pending send let the next send through")
        if recover == "abort":
            assert await loop.abort_pending(sid)
        else:
            async with asyncio.timeout(SEND_TIMEOUT):
                resumed = await loop.resume(sid)
            assert resumed is not None and resumed.status == "done"
            assert resumed.final_text.endswith("fine")
        ended = "pending"
    else:
        assert messages, "a finished send keeps its user message"
    async with asyncio.timeout(SEND_TIMEOUT):
        after = await loop.send("are you there?", session_id=sid)
    assert after.status == "done" and after.final_text == "fine"
    assert_request_pairs(llm.requests[-1])
    await assert_history_valid(store, sid)
    return ended
