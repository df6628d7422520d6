"""A session's active window: the messages the next request is built from.

The window is rebuilt from the store whenever needed; the loop may keep it in memory
between sends, but only as an accelerator: it remembers the session row's incarnation
and the ``next_seq`` it was read up to. Messages are immutable and append-only, so a
window of the same incarnation that is behind the store is brought up to date by reading
just the messages after it; any other window is thrown away. A cold loop and a warm one
therefore hold the same messages and build byte-for-byte the same request.

The window also checks the pairing rules incrementally as messages are added (each tool
call answered by exactly one result, adjacent, in order, ids unique), so the check
before each model call costs nothing for the history already checked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from power_loop.errors import HistoryInvariantError
from power_loop.llm.messages import Message, decode_message
from power_loop.store.store import Store


class Window:
    """The messages of one session from seq 0, with the pairing state after them."""

    __slots__ = ("_call_ids", "_open_calls", "incarnation", "messages", "next_seq",
                 "session_id", "strict")

    def __init__(self, session_id: str, incarnation: str, *, strict: bool = True) -> None:
        self.session_id = session_id
        self.incarnation = incarnation
        self.strict = strict
        self.messages: list[Message] = []
        self.next_seq = 0
        self._open_calls: list[str] = []
        self._call_ids: set[str] = set()

    def extend(self, messages: Iterable[Message]) -> None:
        """Append stored messages (checked against the pairing rules).

        A window that is not ``strict`` (used to abandon a send whatever its history)
        tolerates a broken history: it drops the pairing state where the rules break.
        """
        for message in messages:
            try:
                check_next(message, self._open_calls, self._call_ids, self.session_id,
                           self.next_seq)
            except HistoryInvariantError:
                if self.strict:
                    raise
                self._open_calls.clear()
            self.messages.append(message)
            self.next_seq += 1

    def uses_call_id(self, call_id: str) -> bool:
        """Whether a tool call with this id is already in the window."""
        return call_id in self._call_ids

    @property
    def open_calls(self) -> tuple[str, ...]:
        """Ids of tool calls still waiting for their results, in order."""
        return tuple(self._open_calls)

    def check_request(self, extra: Iterable[Message]) -> None:
        """Check that the window plus ``extra`` can be sent: every call answered."""
        open_calls = list(self._open_calls)
        seen = set(self._call_ids) if extra else self._call_ids
        for offset, message in enumerate(extra):
            check_next(message, open_calls, seen, self.session_id, self.next_seq + offset)
        if open_calls:
            raise HistoryInvariantError(
                f"session {self.session_id!r}: tool calls {open_calls} have no result; the "
                "request was not sent")


def check_next(message: Message, open_calls: list[str], call_ids: set[str],
               session_id: str, seq: int) -> None:
    """Advance the pairing state by one message, or raise."""
    where = f"session {session_id!r}, message {seq}"
    if open_calls:
        results = message.tool_results
        if message.role != "tool" or len(results) != 1 or len(message.parts) != 1:
            raise HistoryInvariantError(
                f"{where}: expected the result of tool call {open_calls[0]!r}, found a "
                f"{message.role} message")
        if results[0].call_id != open_calls[0]:
            raise HistoryInvariantError(
                f"{where}: expected the result of tool call {open_calls[0]!r}, found the "
                f"result of {results[0].call_id!r}")
        open_calls.pop(0)
        return
    if message.role == "tool":
        raise HistoryInvariantError(f"{where}: a tool result follows no tool call")
    for call in message.tool_calls:
        if message.role != "assistant":
            raise HistoryInvariantError(f"{where}: only the assistant calls tools")
        if call.id in call_ids:
            raise HistoryInvariantError(f"{where}: tool call id {call.id!r} is used twice")
        call_ids.add(call.id)
        open_calls.append(call.id)


class WindowCache:
    """Recently used windows, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._windows: OrderedDict[str, Window] = OrderedDict()

    def take(self, session_id: str) -> Window | None:
        """Remove and return the cached window (a send owns it while it runs)."""
        return self._windows.pop(session_id, None)

    def put(self, window: Window) -> None:
        if self._capacity <= 0:
            return
        self._windows[window.session_id] = window
        self._windows.move_to_end(window.session_id)
        while len(self._windows) > self._capacity:
            self._windows.popitem(last=False)

    def drop(self, session_id: str) -> None:
        self._windows.pop(session_id, None)


async def load_window(store: Store, session_id: str, upto: int, incarnation: str,
                      cached: Window | None = None, *, strict: bool = True) -> Window:
    """The window with every message before seq ``upto``, reusing ``cached`` if valid."""
    if (cached is not None and cached.incarnation == incarnation and cached.next_seq <= upto
            and cached.strict == strict):
        window = cached
    else:
        window = Window(session_id, incarnation, strict=strict)
    if window.next_seq < upto:
        records = await store.read_messages(session_id, from_seq=window.next_seq,
                                            limit=upto - window.next_seq)
        if len(records) != upto - window.next_seq or (
                records and records[0].seq != window.next_seq):
            raise HistoryInvariantError(
                f"session {session_id!r}: expected messages {window.next_seq}..{upto - 1}, "
                f"the store returned {len(records)}")
        window.extend(decode_message(r.role, r.body) for r in records)
    return window
