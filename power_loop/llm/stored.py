"""Messages read from the store, decoded when first looked at.

A cold send on a long session reads thousands of stored bodies, and a request carries
them as they are: decoding each into parts up front cost more than reading it. A
:func:`stored_message` whose stored text cannot hold a tool call or a tool result (a user
or assistant message of text alone, the bulk of any history) is a :class:`Message` whose
``parts`` and ``meta`` are decoded from that text on first access, then kept; every other
body is decoded at once, so the pairing rules are checked on it before anything is sent.
Either way it is a ``Message``, equal to (and hashing as) the eagerly decoded one, and a
request built from it has the same bytes.

A lazy body that does not decode (written by something other than power_loop) raises
the codec's :class:`~power_loop.InvalidArgumentError` where it is first read.
"""

from __future__ import annotations

from typing import Any

from power_loop.llm._json import loads as _loads
from power_loop.llm.messages import Message, decode_message

_set = object.__setattr__


class StoredMessage(Message):
    """A :class:`Message` decoded from its stored text on first access to a part."""

    __slots__ = ("_text",)

    def __getattr__(self, name: str) -> Any:
        # Called only while the ``parts``/``meta`` slots are unset (before decoding).
        if name not in ("parts", "meta"):
            raise AttributeError(name)
        decoded = decode_message(self.role, _loads(self._text))
        _set(self, "parts", decoded.parts)
        _set(self, "meta", decoded.meta)
        return getattr(decoded, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.role, self.parts) == (other.role, other.parts)

    def __hash__(self) -> int:
        return hash((self.role, self.parts))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Message, (self.role, self.parts, self.meta))

    def __repr__(self) -> str:
        return repr(Message(self.role, self.parts, self.meta))


class StoredUser(StoredMessage):
    """A stored user message of text alone (its role is the class's: one slot less to
    fill for each of the thousands a cold read makes)."""

    __slots__ = ()
    role = "user"


class StoredAssistant(StoredMessage):
    """A stored assistant message of text alone."""

    __slots__ = ()
    role = "assistant"


LAZY_KINDS: dict[str, type[StoredMessage]] = {"user": StoredUser, "assistant": StoredAssistant}
"""The lazy class for each role a text-only message may have."""
set_text = StoredMessage.__dict__["_text"].__set__
"""Fills a new stored message's text slot (faster than ``object.__setattr__``)."""


def lazy_text(text: str) -> bool:
    """Whether a stored body's text may be decoded lazily: it cannot spell a tool
    part's kind (no ``tool_``, and no ``\\u`` escape that could hide one)."""
    return "tool_" not in text and ("\\" not in text or "\\u" not in text)


def stored_message(role: str, body: Any) -> Message:
    """The message stored with ``role`` and ``body`` (its JSON text, or decoded JSON).

    Text that cannot spell a tool part's kind (no ``tool_``, no ``\\u`` escape) of a user
    or assistant message is decoded when first read; anything else now.
    """
    if type(body) is str:
        kind = LAZY_KINDS.get(role)
        if kind is not None and lazy_text(body):
            message = object.__new__(kind)
            set_text(message, body)
            return message
        body = _loads(body)
    return decode_message(role, body)


def is_lazy_text(message: Message) -> bool:
    """Whether ``message`` is a stored one (of text alone: no tool calls or results)."""
    return isinstance(message, StoredMessage)


def text_bytes(text: str) -> int:
    """An estimate of the memory a stored message of ``text`` takes (the text, and its
    parts once decoded: twice its length, and the objects)."""
    return 400 + 2 * len(text)


def stored_bytes(message: Message) -> int | None:
    """:func:`text_bytes` of a stored message; ``None`` for any other message."""
    if not isinstance(message, StoredMessage):
        return None
    return text_bytes(message._text)
