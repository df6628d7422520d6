"""Data the conformance tests store: awkward text, and a session that uses every table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from power_loop import NewMessage, Store

TRICKY_TEXTS: dict[str, str] = {
    "emoji": "😀 👩‍👩‍👧‍👦 🏳️‍🌈 🇺🇦 \U0001d518\U0001d52b\U0001d526 𠜎𠜱 🀄",
    "combining": "e\u0301 n\u0303 a\u030a\u0323 Z\u0324\u0354\u0367\u0311\u0313 \u0915\u094d\u0937",
    "rtl": "שלום עולם مرحبا بالعالم \u202eevil\u202c \u200f",
    "nul": "\x00leading, in\x00side, trailing\x00",
    "controls": "\x01\x07\x08\x0b\x0c\x1b\x7f \u2028\u2029 \ufeff \ufffe",
    "sql": "'; DROP TABLE x; -- \" OR 1=1 ` %s %% ? $1 {now} \\ \\0 \\n",
    "cjk": "漢字かなカナ한국어",
    "whitespace": " \t\r\n \u00a0\u3000 ",
    # Not valid Unicode (no UTF-8 encoder takes them), yet kept: an undecodable byte as
    # surrogateescape gives it, a lone high and a lone low surrogate.
    "lone_surrogates": "file-\udcff.txt \ud800 x \udc00",
}
"""Text that a careless layer between Python and the database would mangle."""

LONG_TEXT = "".join(f"line {i}: 😀 é\x00 \u05e9\n" for i in range(4000))
"""About 100 KB of multi-byte text with NULs."""


def message(text: str, role: str = "user", send_index: int = 0, **extra: Any) -> NewMessage:
    """A message whose body is ``{"text": text, **extra}``."""
    return NewMessage(send_index, role, {"text": text, **extra})


async def export_text(store: Store, session_id: str) -> str:
    """The whole export of one session as a string."""
    return "".join([line async for line in store.export_session(session_id)])


def lines_of(export: str) -> Iterable[str]:
    """An export split back into the lines ``import_session`` takes."""
    return export.splitlines(keepends=True)


async def build_rich_session(store: Store, session_id: str) -> None:
    """A session that fills every exported column: sends, usage, errors, lease history.

    Ends with two finished sends, one pending send (so ``pending_send`` is set), lease
    epoch 3 (released) and messages holding emoji, NUL, lone surrogates and long text.
    """
    await store.create_session(
        session_id, system_prompt="You are terse.\x00 😀 " + TRICKY_TEXTS["rtl"],
        metadata={"user": "ü-42", "tags": ["a", "😀"], "limits": {"tokens": 2**53, "t": 0.5},
                  "nul\x00key": None, "flag": True})
    first = await store.acquire_lease(session_id, "worker-a", ttl=30)
    send = await store.start_send(session_id, [message(TRICKY_TEXTS["emoji"])],
                                  epoch=first.epoch, request_key="req-1")
    await store.finish_send(
        session_id, send.send_index,
        [message(TRICKY_TEXTS["nul"], role="assistant"),
         message(LONG_TEXT, role="assistant", parts=[{"kind": "text"}, {"kind": "tool"}])],
        epoch=first.epoch, stop_reason="end_turn", rounds=2,
        usage={"input_tokens": 1200, "output_tokens": 345, "cost": 0.0123, "cache": None})
    await store.release_lease(first)
    second = await store.acquire_lease(session_id, "worker-b", ttl=30)
    await store.append_messages(session_id, [message(TRICKY_TEXTS["combining"], role="system")],
                                epoch=second.epoch)
    send = await store.start_send(session_id, [message(TRICKY_TEXTS["cjk"])],
                                  epoch=second.epoch, source="timer")
    await store.finish_send(
        session_id, send.send_index, [message("partial", role="assistant")],
        status="failed", epoch=second.epoch, rounds=1, usage={"input_tokens": 7},
        error={"type": "RateLimited", "message": "slow down \x00 😀", "retry_after": 1.5,
               "path": TRICKY_TEXTS["lone_surrogates"]})
    await store.release_lease(second)
    third = await store.acquire_lease(session_id, "worker-c", ttl=30)
    await store.start_send(session_id, [message(TRICKY_TEXTS["sql"])], epoch=third.epoch,
                           request_key="req-3")
    await store.release_lease(third)
