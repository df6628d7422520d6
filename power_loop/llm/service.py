"""The provider-neutral, SDK-free model interface.

An :class:`LLMService` takes an :class:`LLMRequest` and streams :data:`StreamItem` s:
any number of :class:`TextDelta` and :class:`ToolCallDelta`, then exactly one
:class:`LLMResponse` (the complete assistant message, its usage and stop reason).
The loop only ever streams; a service without real streaming yields the response alone.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from power_loop.llm.messages import Message, Usage, encode_message

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class StopReason(enum.Enum):
    """Why the model stopped."""

    END_TURN = "end_turn"
    TOOL_USE = "tool_use"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    REFUSAL = "refusal"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model sees it: a name, what it does, its arguments' JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": _plain(self.parameters)}


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """Everything a model call needs.

    Attributes:
        messages: The conversation, validated (every tool call answered).
        system: The system prompt.
        tools: The tools the model may call.
        tool_choice: ``auto`` (the model decides) or ``none`` (text only).
        max_output_tokens: Cap on the answer's length.
        output_schema: When set, the final answer must be JSON matching this schema.
        cache_prefix: ``messages[:cache_prefix]`` are the same as in the previous send
            (the stable prefix a provider may cache).
        metadata: Tracing facts (session id, send index); not sent to the model.
    """

    messages: tuple[Message, ...]
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: Literal["auto", "none"] = "auto"
    max_output_tokens: int | None = None
    output_schema: Mapping[str, Any] | None = None
    cache_prefix: int = 0
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A canonical JSON form of what a provider is sent: equal requests, equal bytes.

        Message ``meta`` is left out: it is never sent to a model.
        """
        return {
            "system": self.system,
            "messages": [{"role": m.role, "parts": encode_message(m)["parts"]}
                         for m in self.messages],
            "tools": [t.to_json() for t in self.tools],
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "output_schema": None if self.output_schema is None else _plain(self.output_schema),
            "cache_prefix": self.cache_prefix,
        }

    def canonical_bytes(self) -> bytes:
        """The request as canonical JSON bytes (what "byte-for-byte equal" compares)."""
        return json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, as it streams."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, as it streams (``index`` identifies the call)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """The complete answer of one model call."""

    message: Message
    usage: Usage
    stop_reason: StopReason
    model: str | None = None


StreamItem = TextDelta | ToolCallDelta | LLMResponse


@runtime_checkable
class LLMService(Protocol):
    """What the loop needs from a model. Implement it to plug in any provider."""

    @property
    def model(self) -> str:
        """The model's name, for records and events."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        """Stream one answer: deltas, then exactly one :class:`LLMResponse` last.

        Raise a :class:`~power_loop.errors.PowerLoopError` subclass on failure.
        """
        ...
