"""Shared pieces of the loop's behaviour tests.

Loops built on the test's store, models that stall or fail on cue, the state a crashed
process leaves behind (made with the store's own operations), and the stored state in a
form two sessions can be compared by.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, ClassVar

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    Message,
    NewMessage,
    PowerLoopError,
    ScriptedLLM,
    SessionBusyError,
    StatefulAgentLoop,
    Store,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from power_loop.llm.messages import encode_message
from power_loop.llm.service import LLMService, StreamItem, TextDelta
from power_loop.store.records import SendStart


class ModelDown(PowerLoopError):
    """What a provider adapter raises when the model cannot be reached."""

    code: ClassVar[str] = "model_down"


def make_loop(store: Store, llm: LLMService,
              tools: Iterable[Tool | Callable[..., Any]] = (),
              **config: Any) -> StatefulAgentLoop:
    """A loop on the test's store (the loop does not close it)."""
    return StatefulAgentLoop(llm=llm, store=store, tools=list(tools),
                             config=AgentLoopConfig(**config))


async def stored_state(store: Store, session_id: str) -> list[tuple[int, int, str, Any]]:
    """Every stored message as ``(seq, send_index, role, body)``: all but timestamps."""
    return [(r.seq, r.send_index, r.role, r.body)
            for r in await store.read_messages(session_id)]


async def shape(store: Store, session_id: str) -> list[tuple[int, str]]:
    """``(send_index, role)`` of every stored message."""
    return [(r.send_index, r.role) for r in await store.read_messages(session_id)]


def trailing_results(request: LLMRequest) -> list[ToolResultPart]:
    """The tool results at the end of a request, in order."""
    results: list[ToolResultPart] = []
    for message in reversed(request.messages):
        if message.role != "tool":
            break
        results.extend(message.tool_results)
    return results[::-1]


def texts(request: LLMRequest) -> list[str]:
    """The text of every message of a request."""
    return [m.text for m in request.messages]


class Refusals:
    """Counts how often ``store.begin_send`` refused a busy session, from now on: proof
    that a loop is waiting for the lease (the real method runs, wrapped)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        begin_send = store.begin_send

        async def counted(*args: Any, **kwargs: Any) -> SendStart:
            try:
                return await begin_send(*args, **kwargs)
            except SessionBusyError:
                self.count += 1
                raise

        store.begin_send = counted  # type: ignore[method-assign]

    async def seen(self) -> bool:
        return self.count > 0


async def lease_is_free(store: Store, session_id: str) -> bool:
    session = await store.get_session(session_id)
    return session.lease_owner is None and session.lease_expires_at is None


async def crash_after_tool_calls(store: Store, session_id: str, user_text: str,
                                 calls: Sequence[ToolCallPart], text: str = "") -> int:
    """Leave what a process killed right after storing the model's tool calls leaves.

    The send is pending, its user message and the assistant message with ``calls`` are
    stored, no result is, and the dead holder's lease has lapsed. Returns the send index.
    """
    start = await store.begin_send(
        session_id, [NewMessage(0, "user", encode_message(Message.user(user_text)))],
        owner="crashed-process", ttl=30)
    assert start.lease is not None
    answer = Message.assistant(text, calls, stop_reason="tool_use")
    await store.append_messages(
        session_id, [NewMessage(start.send_index, "assistant", encode_message(answer))],
        epoch=start.lease.epoch)
    assert await store.release_lease(start.lease)
    return start.send_index


class StallingLLM:
    """A model whose first answer streams ``pieces`` and then never finishes.

    ``streaming`` is set once every piece has been consumed by the loop; the call then
    hangs until it is cancelled. Later calls are answered by ``then``.
    """

    def __init__(self, pieces: Sequence[str], then: ScriptedLLM | None = None) -> None:
        self._pieces = list(pieces)
        self._then = then or ScriptedLLM([])
        self._stalled = False
        self.streaming = asyncio.Event()
        self.requests: list[LLMRequest] = []

    @property
    def model(self) -> str:
        return "stalling"

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        if self._stalled:
            async for item in self._then.stream(request):
                yield item
            return
        self._stalled = True
        for piece in self._pieces:
            yield TextDelta(piece)
        self.streaming.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable: the stalled call is only ever cancelled")
