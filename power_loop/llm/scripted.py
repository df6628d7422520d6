"""``ScriptedLLM``: a deterministic offline model for tests, examples and demos.

Script it with a list of turns, consumed one per model call::

    llm = ScriptedLLM([
        call_tool("add", {"a": 1, "b": 2}),
        reply("1 + 2 = 3"),
    ])

or with a function from the request to the next turn, for long runs that must answer
whatever comes (folds, sub-agents, timers)::

    llm = ScriptedLLM(lambda request: reply(f"you said {request.messages[-1].text}"))

Every request received is kept in ``llm.requests``. Call ids are derived from the
position in the conversation, so they are the same in every process.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from power_loop.errors import ScriptExhaustedError
from power_loop.llm.messages import Message, TextPart, ToolCallPart, Usage
from power_loop.llm.service import (
    LLMRequest,
    LLMResponse,
    StopReason,
    StreamItem,
    TextDelta,
    ToolCallDelta,
)


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A tool call in a scripted turn; ``arguments`` may be a dict or raw (bad) JSON text."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted model answer.

    Attributes:
        text: The answer's text.
        tool_calls: Tool calls to make.
        error: Raise this instead of answering (after ``error_after`` text chunks).
        stop_reason: Defaults to ``tool_use`` with calls, else ``end_turn``.
        usage: Token counts to report; a cheap deterministic estimate otherwise.
        chunks: Stream the text in this many pieces (default: the model's setting).
        delay: Seconds to wait before answering (a slow model).
        chunk_delay: Seconds to wait before each streamed chunk (a slow stream that can
            be cancelled half-way).
        error_after: With ``error``, how many text chunks stream before it is raised.
    """

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    error: BaseException | None = None
    stop_reason: StopReason | None = None
    usage: Usage | None = None
    chunks: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    error_after: int = 0


def reply(text: str, **options: Any) -> Turn:
    """A turn answering with ``text``."""
    return Turn(text=text, **options)


def call_tool(name: str, arguments: Mapping[str, Any] | str | None = None, *,
              text: str = "", **options: Any) -> Turn:
    """A turn calling one tool (``arguments`` may be raw, even malformed, JSON text)."""
    return Turn(text=text, tool_calls=(ScriptedCall(name, arguments or {}),), **options)


def call_tools(*calls: tuple[str, Mapping[str, Any] | str], text: str = "",
               **options: Any) -> Turn:
    """A turn calling several tools at once: ``call_tools(("a", {...}), ("b", {...}))``."""
    return Turn(text=text, tool_calls=tuple(ScriptedCall(n, a) for n, a in calls), **options)


def fail(error: BaseException, *, after_chunks: int = 0, text: str = "") -> Turn:
    """A turn raising ``error`` (after streaming ``after_chunks`` pieces of ``text``)."""
    return Turn(text=text, error=error, error_after=after_chunks)


Script = Sequence["Turn | str"] | Callable[[LLMRequest], "Turn | str | Awaitable[Turn | str]"]


class ScriptedLLM:
    """A deterministic :class:`~power_loop.llm.service.LLMService` that runs offline.

    Args:
        script: Turns (a string is a text reply) or a function from request to turn.
        model: The name it reports.
        chunk_size: Stream text in pieces of this many characters (``None``: whole).
    """

    def __init__(self, script: Script, *, model: str = "scripted",
                 chunk_size: int | None = None) -> None:
        self._script = script
        self._model = model
        self._chunk_size = chunk_size
        self._position = 0
        self.requests: list[LLMRequest] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def remaining(self) -> int | None:
        """Turns left in a list script (``None`` for a function script)."""
        if callable(self._script):
            return None
        return len(self._script) - self._position

    async def _next_turn(self, request: LLMRequest) -> Turn:
        if callable(self._script):
            produced = self._script(request)
            if type(produced) is not Turn and type(produced) is not str:  # maybe awaitable
                produced = await produced if inspect.isawaitable(produced) else produced
            turn = produced
        else:
            if self._position >= len(self._script):
                raise ScriptExhaustedError(
                    f"ScriptedLLM has no turn left for call #{self._position + 1} "
                    f"(script has {len(self._script)} turns)")
            turn = self._script[self._position]
            self._position += 1
        return Turn(text=turn) if isinstance(turn, str) else turn

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        turn = await self._next_turn(request)
        if turn.delay:
            await asyncio.sleep(turn.delay)
        pieces = _pieces(turn.text, turn.chunks, self._chunk_size)
        if turn.error is not None:
            pieces = pieces[:turn.error_after]
        for piece in pieces:
            if turn.chunk_delay:
                await asyncio.sleep(turn.chunk_delay)
            yield TextDelta(piece)
        if turn.error is not None:
            raise turn.error
        base = len(request.messages)
        calls = []
        for i, scripted in enumerate(turn.tool_calls):
            arguments = (scripted.arguments if isinstance(scripted.arguments, str)
                         else json.dumps(dict(scripted.arguments), ensure_ascii=False))
            call = ToolCallPart(scripted.id or f"call_{base}_{i}", scripted.name, arguments)
            half = len(arguments) // 2
            yield ToolCallDelta(i, call.id, call.name, arguments[:half])
            yield ToolCallDelta(i, None, None, arguments[half:])
            calls.append(call)
        stop = turn.stop_reason or (StopReason.TOOL_USE if calls else StopReason.END_TURN)
        parts = ((TextPart(turn.text),) if turn.text else ()) + tuple(calls)
        usage = turn.usage or Usage(
            input_tokens=8 * len(request.messages) + len(request.system or "") // 4,
            output_tokens=max(1, (len(turn.text) + sum(len(c.arguments) for c in calls)) // 4))
        yield LLMResponse(Message("assistant", parts), usage, stop, self._model)


def _pieces(text: str, chunks: int | None, chunk_size: int | None) -> list[str]:
    if not text:
        return []
    if chunks:
        size = max(1, -(-len(text) // chunks))
    elif chunk_size:
        size = chunk_size
    else:
        return [text]
    return [text[i:i + size] for i in range(0, len(text), size)]
