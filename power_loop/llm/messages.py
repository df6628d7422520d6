"""Provider-neutral messages: immutable parts with a ``kind``, and one versioned codec.

A :class:`Message` has a role and a tuple of parts:

* :class:`TextPart` - text;
* :class:`ToolCallPart` - the model asks for a tool (its arguments kept as the exact
  JSON text the model produced, valid or not);
* :class:`ToolResultPart` - what a tool returned for one call.

Roles: ``user``, ``assistant`` and ``tool`` (one tool result per message, right after
the assistant message that made the call). ``meta`` carries facts that are never sent to
a model: usage, stop reason, why a message was synthesized.

The stored form (codec version 1) is plain JSON, documented in docs/sessions.md::

    {"v": 1, "parts": [{"kind": "text", "text": "Hi"}], "meta": {}}
    {"v": 1, "parts": [{"kind": "tool_call", "id": "c1", "name": "add",
                        "arguments": "{\\"a\\": 1}"}], "meta": {"stop_reason": "tool_use"}}
    {"v": 1, "parts": [{"kind": "tool_result", "call_id": "c1", "name": "add",
                        "content": "2", "is_error": false}], "meta": {}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from power_loop.errors import InvalidArgumentError

CODEC_VERSION = 1
Role = Literal["user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"user", "assistant", "tool"})
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text."""

    text: str
    kind: ClassVar[str] = "text"


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A tool call requested by the model.

    Attributes:
        id: The call id, unique within the session's history.
        name: The tool's name (possibly one that does not exist: the model chose it).
        arguments: The arguments exactly as the model wrote them (JSON text, maybe
            malformed); see :meth:`parsed_arguments`.
    """

    id: str
    name: str
    arguments: str
    kind: ClassVar[str] = "tool_call"

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ``ValueError`` when malformed).

        Arguments nested too deeply for the decoder are malformed too: the
        ``RecursionError`` becomes a ``ValueError`` that names the depth, not the text.
        """
        if not self.arguments.strip():
            return {}
        try:
            return json.loads(self.arguments)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply to decode") from None


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """The outcome of one tool call."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    kind: ClassVar[str] = "tool_result"


Part = TextPart | ToolCallPart | ToolResultPart


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation."""

    role: Role
    parts: tuple[Part, ...]
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)

    @classmethod
    def user(cls, text: str, **meta: Any) -> Message:
        return cls("user", (TextPart(text),), MappingProxyType(meta) if meta else _EMPTY)

    @classmethod
    def assistant(cls, text: str = "", calls: Iterable[ToolCallPart] = (),
                  **meta: Any) -> Message:
        parts: list[Part] = [TextPart(text)] if text else []
        parts.extend(calls)
        return cls("assistant", tuple(parts), MappingProxyType(meta) if meta else _EMPTY)

    @classmethod
    def tool_result(cls, result: ToolResultPart, **meta: Any) -> Message:
        return cls("tool", (result,), MappingProxyType(meta) if meta else _EMPTY)

    @property
    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        parts = self.parts
        if len(parts) == 1 and type(parts[0]) is TextPart:
            return ()  # most messages: asked for several times per send
        return tuple(p for p in parts if isinstance(p, ToolCallPart))

    @property
    def tool_results(self) -> tuple[ToolResultPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ToolResultPart))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one model call, or a sum of them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cache_read_tokens + other.cache_read_tokens,
                     self.cache_write_tokens + other.cache_write_tokens)

    @property
    def cache_hit_ratio(self) -> float:
        """Share of the input tokens read from the provider's prompt cache."""
        seen = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / seen if seen else 0.0

    @property
    def total_tokens(self) -> int:
        """Input (including cached) plus output tokens."""
        return (self.input_tokens + self.output_tokens + self.cache_read_tokens
                + self.cache_write_tokens)

    def to_json(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens,
                "cache_write_tokens": self.cache_write_tokens}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Usage:
        """A stored usage: a count that is not a non-negative integer reads as 0."""
        if not isinstance(data, Mapping):
            return cls()
        return cls(_count(data.get("input_tokens")), _count(data.get("output_tokens")),
                   _count(data.get("cache_read_tokens")), _count(data.get("cache_write_tokens")))


def _count(value: object) -> int:
    """A stored token count; anything but a non-negative integer reads as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# -- the codec -------------------------------------------------------------------------


def encode_part(part: Part) -> dict[str, Any]:
    """A part as its stored JSON object."""
    if isinstance(part, TextPart):
        return {"kind": "text", "text": part.text}
    if isinstance(part, ToolCallPart):
        return {"kind": "tool_call", "id": part.id, "name": part.name,
                "arguments": part.arguments}
    if isinstance(part, ToolResultPart):
        return {"kind": "tool_result", "call_id": part.call_id, "name": part.name,
                "content": part.content, "is_error": part.is_error}
    raise InvalidArgumentError(f"not a message part: {part!r}")


_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "tool_call": ("id", "name", "arguments"),
    "tool_result": ("call_id", "name", "content"),
}


def decode_part(data: Mapping[str, Any]) -> Part:
    """A stored JSON object back into a part; anything malformed is an error."""
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"a message part must be an object, not {data!r:.60}")
    kind = data.get("kind")
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise InvalidArgumentError(f"unknown message part kind {kind!r}")
    values: list[str] = []
    for name in fields:
        value = data.get(name)
        if not isinstance(value, str):
            raise InvalidArgumentError(f"a {kind} part needs string fields {', '.join(fields)}")
        values.append(value)
    if kind == "text":
        return TextPart(values[0])
    if kind == "tool_call":
        return ToolCallPart(values[0], values[1], values[2])
    is_error = data.get("is_error", False)
    if not isinstance(is_error, bool):
        raise InvalidArgumentError("a tool_result part's is_error must be true or false")
    return ToolResultPart(values[0], values[1], values[2], is_error)


def encode_message(message: Message) -> dict[str, Any]:
    """The stored body of a message (the role is stored beside it)."""
    return {"v": CODEC_VERSION, "parts": [encode_part(p) for p in message.parts],
            "meta": dict(message.meta)}


def decode_message(role: str, body: Mapping[str, Any]) -> Message:
    """A stored body back into a :class:`Message`."""
    fast = _decode_plain(role, body)
    if fast is not None:
        return fast
    if not isinstance(body, Mapping):
        raise InvalidArgumentError("a stored message body must be a JSON object")
    version = body.get("v")
    if version != CODEC_VERSION:
        raise InvalidArgumentError(
            f"message codec version {version!r} is not supported (this power_loop reads "
            f"{CODEC_VERSION}); upgrade power-loop")
    if role not in ROLES:
        raise InvalidArgumentError(f"unknown message role {role!r}")
    parts, meta = body.get("parts"), body.get("meta") or {}
    if not isinstance(parts, list) or not isinstance(meta, Mapping):
        raise InvalidArgumentError("a stored message needs a 'parts' list and a 'meta' object")
    return Message(role, tuple(decode_part(p) for p in parts),  # type: ignore[arg-type]
                   MappingProxyType(dict(meta)) if meta else _EMPTY)


def _decode_plain(role: str, body: Any) -> Message | None:
    """:func:`decode_message` for the common, well-formed body as the codec writes it
    (a history's cold read decodes thousands); ``None`` sends anything else down the
    checking path, which raises the precise error."""
    if type(body) is not dict or body.get("v") != CODEC_VERSION or role not in ROLES:
        return None
    parts, meta = body.get("parts"), body.get("meta")
    if type(parts) is not list or (meta and type(meta) is not dict):
        return None
    out: list[Part] = []
    for data in parts:
        if type(data) is not dict:
            return None
        kind = data.get("kind")
        if kind == "text":
            text = data.get("text")
            if type(text) is not str:
                return None
            out.append(TextPart(text))
        elif kind == "tool_call":
            call_id, name, arguments = data.get("id"), data.get("name"), data.get("arguments")
            if type(call_id) is not str or type(name) is not str or type(arguments) is not str:
                return None
            out.append(ToolCallPart(call_id, name, arguments))
        elif kind == "tool_result":
            call_id, name, content = data.get("call_id"), data.get("name"), data.get("content")
            is_error = data.get("is_error", False)
            if (type(call_id) is not str or type(name) is not str or type(content) is not str
                    or type(is_error) is not bool):
                return None
            out.append(ToolResultPart(call_id, name, content, is_error))
        else:
            return None
    return Message(role, tuple(out),  # type: ignore[arg-type]
                   MappingProxyType(dict(meta)) if meta else _EMPTY)
