"""A session's rendered history before the current send, as the context engine caches it.

A cold send on a long session reads every stored message once (10,000 for a long session
without a fold), so what is made per row and per send here is what a new process's first
send costs. Each stored row becomes one message (a text-only one keeps its stored text,
see :mod:`power_loop.llm.stored`); the sends of text alone are recorded as a run of
boundaries (three ints a send) rather than a :class:`RenderedSend` each, and made into
them only when something asks for the sends one by one (a fold). The request needs only
the messages in order, which the history keeps flat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from power_loop.llm.messages import (
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    decode_message,
)
from power_loop.llm.stored import (
    StoredAssistant,
    StoredMessage,
    StoredUser,
    set_text,
    stored_bytes,
    stored_message,
)
from power_loop.store.context_ops import FoldRecord, NoteRecord
from power_loop.store.records import MessageRecord
from power_loop.store.statements import ASSISTANT_KEY

HISTORY_BYTES = 1024
"""What a cached history costs besides its messages (its objects, the cache entry)."""
_NO_IDS: frozenset[str] = frozenset()


class RenderedSend(NamedTuple):
    """A finished send as requests show it."""

    send_index: int
    first_seq: int
    messages: list[Message]
    tokens: int
    call_ids: frozenset[str] = frozenset()
    """The ids of the send's tool calls in the log (rendered or not)."""
    nbytes: int = 0
    """An estimate of the memory its rendered messages take (for the cache's bound)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where the sends of a cold read start, from :func:`group_stored`.

    ``marks`` holds three ints per send, then three for the end: the send's index, the
    position of its first message among the read's messages, and the estimated bytes
    (:func:`message_bytes`, less 400 a message) of the messages before it. The index of
    the end's triple is meaningless.
    """

    marks: list[int]
    first_seq: int
    """The seq of the read's first message."""

    def __len__(self) -> int:
        return len(self.marks) // 3 - 1

    def span(self, lo: int, hi: int) -> tuple[int, int, int]:
        """Positions of the first and past the last message of sends ``lo..hi-1``
        among the read's messages, and their estimated bytes."""
        marks = self.marks
        start, end = marks[3 * lo + 1], marks[3 * hi + 1]
        return start, end, 400 * (end - start) + marks[3 * hi + 2] - marks[3 * lo + 2]

    def send(self, k: int, messages: list[Message], shift: int = 0) -> RenderedSend:
        """Send ``k`` verbatim and uncounted, its messages taken from ``messages`` (the
        read's message at position ``p`` being ``messages[p + shift]``)."""
        start, end, nbytes = self.span(k, k + 1)
        return RenderedSend(self.marks[3 * k], self.first_seq + start,
                            messages[start + shift:end + shift], 0, _NO_IDS, nbytes)


class _Run(NamedTuple):
    """Sends ``lo..hi-1`` of a cold read, verbatim, uncounted and of text alone, not yet
    made into :class:`RenderedSend` s; the read's message at position ``p`` is the
    history's ``flat[p + shift]``."""

    bounds: Bounds
    lo: int
    hi: int
    shift: int


@dataclass(slots=True)
class History:
    """A session's rendered history before the current send (cached between sends)."""

    session_id: str
    incarnation: str
    fold: FoldRecord | None
    summary: Message | None
    _sends: list[RenderedSend | _Run]
    next_send: int
    next_seq: int
    notes: list[NoteRecord] = field(default_factory=list)
    calibration: float = 1.0
    call_ids: set[str] = field(default_factory=set)
    """Ids of the tool calls in the unfolded log: a new call must not reuse one, whether
    the representation shows the calls or not (the log is checked as a whole)."""
    unstored: list[tuple[int, int, Any]] = field(default_factory=list)
    """Projections computed from the log that the store does not have yet."""
    flat: list[Message] = field(default_factory=list)
    """Every rendered send's messages, in order (kept as sends are added)."""
    tokens: int = 0
    """The rendered sends' tokens, summed as they are added (counted only by an engine
    with a budget: nothing else reads them)."""
    nbytes: int = 0
    """An estimate of the memory the rendered sends take, summed as they are added."""
    _runs: int = 0
    """How many runs of sends ``_sends`` holds, not yet made into RenderedSends."""

    @property
    def sends(self) -> list[RenderedSend]:
        """The rendered sends, in order (treat the list as read-only)."""
        if self._runs:
            built: list[RenderedSend | _Run] = []
            for item in self._sends:
                if type(item) is _Run:
                    bounds, shift, flat = item.bounds, item.shift, self.flat
                    built.extend(bounds.send(k, flat, shift) for k in range(item.lo, item.hi))
                else:
                    built.append(item)
            self._sends, self._runs = built, 0
        return self._sends  # type: ignore[return-value]  # no runs left in it

    def add(self, send: RenderedSend) -> None:
        """Append a rendered send (the flat prefix, token total and call ids follow)."""
        self._sends.append(send)
        self.flat.extend(send.messages)
        self.tokens += send.tokens
        self.nbytes += send.nbytes
        if send.call_ids:
            self.call_ids.update(send.call_ids)

    def add_run(self, bounds: Bounds, lo: int, hi: int, messages: list[Message]) -> None:
        """Append sends ``lo..hi-1`` of a cold read whose messages are ``messages``:
        verbatim, uncounted, with no tool calls."""
        start, end, nbytes = bounds.span(lo, hi)
        flat = self.flat
        shift = len(flat) - start
        flat.extend(messages if start == 0 and end == len(messages) else messages[start:end])
        self.nbytes += nbytes
        self._sends.append(_Run(bounds, lo, hi, shift))
        self._runs += 1

    def keep(self, sends: list[RenderedSend]) -> None:
        """Keep only ``sends`` (after a fold)."""
        self._sends, self.flat, self.tokens, self.call_ids = [], [], 0, set()
        self.nbytes, self._runs = 0, 0
        for send in sends:
            self.add(send)

    def cache_bytes(self) -> int:
        """The estimated memory held, as the store's window cache accounts it."""
        summary = message_bytes(self.summary) if self.summary is not None else 0
        return HISTORY_BYTES + self.nbytes + summary + 80 * len(self.call_ids)

    def prefix(self) -> list[Message]:
        """The summary, then every rendered send's messages (treat it as read-only)."""
        return [self.summary, *self.flat] if self.summary is not None else self.flat


def group_stored(rows: Sequence[Sequence[Any]], first_seq: int, *,
                 split: int = ASSISTANT_KEY) -> tuple[list[Message], Bounds, list[int]] | None:
    """Rows ``(key, body)`` from seq ``first_seq`` on (as ``Store.read_message_texts``
    keys them, an assistant's keys starting at ``split``), as messages in order, where
    each send starts among them, and the sends holding a message decoded at once (it may
    hold tool calls); text-only bodies are decoded when read. ``None`` when a row has no
    key (then read the records, see :func:`group_records`).

    This runs once per stored message on a cold send (10,000 for a long session): the
    common case, a text-only body, is made inline, and a send costs three ints.
    """
    flat: list[Message] = []
    marks: list[int] = []
    eager: list[int] = []
    new, stored, user, assistant = object.__new__, stored_message, StoredUser, StoredAssistant
    current, weight, chars, sends = None, 0, 0, -1
    append, mark = flat.append, marks.append
    for key, body in rows:
        if key is None:
            return None
        if key >= 0:
            kind: type[StoredMessage] | None
            if key < split:
                kind, send_index = user, key
            else:
                kind, send_index = assistant, key - split
        else:
            kind, send_index = None, ~key  # a tool result: -1 - send_index
        if send_index != current:
            # weight: the messages' estimate less 400 each (stored.text_bytes for the lazy
            # ones: 400 + 2 chars; message_bytes for the others)
            mark(send_index)
            mark(len(flat))
            mark(weight + 2 * chars)
            current, sends = send_index, sends + 1
        # stored.lazy_text, inline; a backslash is rare in text, and one memchr for it
        # costs less than a search for the two characters (the same test)
        if (kind is not None and type(body) is str and "tool_" not in body
                and ("\\" not in body or "\\u" not in body)):
            message: Message = new(kind)
            set_text(message, body)
            chars += len(body)
        else:
            role = "user" if kind is user else "assistant" if kind is assistant else "tool"
            message = stored(role, body)
            weight += message_bytes(message) - 400
            if not eager or eager[-1] != sends:
                eager.append(sends)
        append(message)
    marks += (-1, len(flat), weight + 2 * chars)
    return flat, Bounds(marks, first_seq), eager


def group_records(records: Sequence[MessageRecord], first_seq: int,
                  ) -> tuple[list[Message], Bounds, list[int]]:
    """What :func:`group_stored` makes of rows, made of whole records, every message
    decoded at once (for the rows a keyed read cannot key: rare, never written by
    power_loop)."""
    flat: list[Message] = []
    marks: list[int] = []
    current, weight = None, 0
    for record in records:
        if not marks or record.send_index != current:
            marks += (record.send_index, len(flat), weight)
            current = record.send_index
        message = decode_message(record.role, record.body)
        weight += message_bytes(message) - 400
        flat.append(message)
    marks += (-1, len(flat), weight)
    return flat, Bounds(marks, first_seq), list(range(len(marks) // 3 - 1))


def call_ids_of(messages: Sequence[Message]) -> frozenset[str]:
    """The ids of the tool calls among ``messages`` (stored text-only messages have
    none, and are left undecoded)."""
    ids: list[str] = []
    for message in messages:
        if message.role == "assistant" and not isinstance(message, StoredMessage):
            ids.extend(p.id for p in message.parts if type(p) is ToolCallPart)
    return frozenset(ids) if ids else _NO_IDS


def message_bytes(message: Message) -> int:
    """An estimate of the memory a decoded message holds (the cache's accounting).

    Objects cost their CPython sizes (a message ~200 bytes, a part ~150, a meta mapping
    ~400), strings their length plus their header; close enough to bound a cache.
    """
    stored = stored_bytes(message)
    if stored is not None:  # not decoded yet: reckoned from its text
        return stored
    total = 200 + (400 if message.meta else 0)
    for part in message.parts:
        if type(part) is TextPart:
            total += 200 + len(part.text)
        elif type(part) is ToolCallPart:
            total += 300 + len(part.id) + len(part.name) + len(part.arguments)
        elif type(part) is ToolResultPart:
            total += 300 + len(part.call_id) + len(part.name) + len(part.content)
    return total
