"""A send's tail (its messages so far) read and written: what the send state machine
asks of it between model rounds (:mod:`power_loop.loop.driver`), and what recovery and
approvals ask of a send found in the store."""

from __future__ import annotations

from collections.abc import Sequence

from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart, encode_message
from power_loop.llm.service import StopReason
from power_loop.loop.window import Window
from power_loop.store.records import NewMessage


def encode(messages: Sequence[Message], send_index: int) -> list[NewMessage]:
    """Messages as the store appends them, in send ``send_index``."""
    return [NewMessage(send_index, m.role, encode_message(m)) for m in messages]


def synthetic_result(call: ToolCallPart, text: str, reason: str) -> Message:
    """A result power_loop writes for a call whose real result does not exist."""
    return Message.tool_result(ToolResultPart(call.id, call.name, text, True), synthetic=reason)


def is_incomplete(message: Message) -> bool:
    """An answer that stopped early: cut by the output limit or by a failed stream."""
    return message.role == "assistant" and not message.tool_calls and (
        message.meta.get("stop_reason") == StopReason.MAX_TOKENS.value
        or bool(message.meta.get("partial")))


def was_cut(message: Message) -> bool:
    """An answer cut by the output limit (continued at most ``max_continuations`` times)."""
    return (message.role == "assistant" and not message.tool_calls
            and message.meta.get("stop_reason") == StopReason.MAX_TOKENS.value)


def final_text(tail: Sequence[Message]) -> str:
    """The send's answer: its last assistant text, joined to the texts it continues."""
    pieces: list[str] = []
    for message in reversed(tail):
        if message.role == "assistant":
            if pieces and not is_incomplete(message):
                break
            pieces.append(message.text)
        elif message.role == "user" and message.meta.get("synthetic"):
            continue
        elif pieces:
            break
    return "".join(reversed(pieces))


def open_call_parts(window: Window) -> list[ToolCallPart]:
    """The tool calls still waiting for results, as parts, in call order."""
    waiting = set(window.open_calls)
    if not waiting:
        return []
    for message in reversed(window.messages):
        if message.role == "assistant" and message.tool_calls:
            return [c for c in message.tool_calls if c.id in waiting]
    return []
