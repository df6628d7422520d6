"""The verbatim messages of the send in progress, checked as they are added.

A window holds the messages from ``start_seq`` on (the current send's first message)
and checks the pairing rules incrementally as they come (each tool call answered by
exactly one result, adjacent, in order, ids unique), so the check before each model
call costs nothing for what was already checked. The history before the send is built
by :class:`~power_loop.context.engine.ContextEngine`.
"""

from __future__ import annotations

from collections.abc import Iterable

from power_loop.errors import HistoryInvariantError
from power_loop.llm.messages import Message, decode_message
from power_loop.store.store import Store


class Window:
    """The messages of one session from seq 0, with the pairing state after them."""

    __slots__ = ("_call_ids", "_open_calls", "_prior_ids", "incarnation", "messages",
                 "next_seq", "session_id", "strict")

    def __init__(self, session_id: str, incarnation: str, *, strict: bool = True,
                 start_seq: int = 0, prior_call_ids: set[str] | frozenset[str] = frozenset(),
                 ) -> None:
        self.session_id = session_id
        self.incarnation = incarnation
        self.strict = strict
        self.messages: list[Message] = []
        self.next_seq = start_seq
        self._open_calls: list[str] = []
        self._call_ids: set[str] = set()
        self._prior_ids = prior_call_ids  # ids in the history before: read, never changed

    def extend(self, messages: Iterable[Message]) -> None:
        """Append stored messages (checked against the pairing rules).

        A window that is not ``strict`` (used to abandon a send whatever its history)
        tolerates a broken history: it drops the pairing state where the rules break.
        """
        for message in messages:
            try:
                for call in message.tool_calls:
                    if call.id in self._prior_ids:
                        raise HistoryInvariantError(
                            f"session {self.session_id!r}, message {self.next_seq}: tool call "
                            f"id {call.id!r} is used twice")
                check_next(message, self._open_calls, self._call_ids, self.session_id,
                           self.next_seq)
            except HistoryInvariantError:
                if self.strict:
                    raise
                self._open_calls.clear()
            self.messages.append(message)
            self.next_seq += 1

    def uses_call_id(self, call_id: str) -> bool:
        """Whether a tool call with this id is already in the request."""
        return call_id in self._call_ids or call_id in self._prior_ids

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
    if open_calls:
        results = message.tool_results
        if message.role != "tool" or len(results) != 1 or len(message.parts) != 1:
            raise HistoryInvariantError(
                f"{_where(session_id, seq)}: expected the result of tool call "
                f"{open_calls[0]!r}, found a {message.role} message")
        if results[0].call_id != open_calls[0]:
            raise HistoryInvariantError(
                f"{_where(session_id, seq)}: expected the result of tool call "
                f"{open_calls[0]!r}, found the result of {results[0].call_id!r}")
        open_calls.pop(0)
        return
    if message.role == "tool":
        raise HistoryInvariantError(
            f"{_where(session_id, seq)}: a tool result follows no tool call")
    for call in message.tool_calls:
        if message.role != "assistant":
            raise HistoryInvariantError(
                f"{_where(session_id, seq)}: only the assistant calls tools")
        if call.id in call_ids:
            raise HistoryInvariantError(
                f"{_where(session_id, seq)}: tool call id {call.id!r} is used twice")
        call_ids.add(call.id)
        open_calls.append(call.id)


def _where(session_id: str, seq: int) -> str:
    # Made only for an error: check_next runs for every message a send adds.
    return f"session {session_id!r}, message {seq}"


async def load_window(store: Store, session_id: str, start_seq: int, upto: int,
                      incarnation: str, *, strict: bool = True,
                      prior_call_ids: set[str] | frozenset[str] = frozenset()) -> Window:
    """The window of the messages in ``[start_seq, upto)``, read from the store."""
    window = Window(session_id, incarnation, strict=strict, start_seq=start_seq,
                    prior_call_ids=prior_call_ids)
    if start_seq < upto:
        records = await store.read_messages(session_id, from_seq=start_seq,
                                            limit=upto - start_seq)
        if len(records) != upto - start_seq or (records and records[0].seq != start_seq):
            raise HistoryInvariantError(
                f"session {session_id!r}: expected messages {start_seq}..{upto - 1}, "
                f"the store returned {len(records)}")
        window.extend(decode_message(r.role, r.body) for r in records)
    return window
