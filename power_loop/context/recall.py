"""Built-in tools that bring back the verbatim detail the request no longer shows.

The message log is never rewritten: folds and projections only change what requests
show. ``recall_send(send_index)`` returns one send's exact messages;
``recall_compacted(page)`` pages through the folded region. Both are bounded in size,
read-only, and safe to repeat.
"""

from __future__ import annotations

from collections.abc import Sequence

from power_loop.context.active import active_run
from power_loop.llm.messages import Message, decode_message
from power_loop.store.records import MessageRecord
from power_loop.tools.registry import truncate
from power_loop.tools.tool import Tool, ToolError, tool

PAGE_MESSAGES = 40


def render_records(records: Sequence[MessageRecord]) -> str:
    """Messages as exact text, one block per message (``[seq] role: ...``)."""
    blocks = []
    for record in records:
        message: Message = decode_message(record.role, record.body)
        lines = [f"[{record.seq}] {message.role}:"]
        if message.text:
            lines.append(message.text)
        lines.extend(f"call {c.name} {c.arguments}" for c in message.tool_calls)
        lines.extend(f"result of {r.name}{' (error)' if r.is_error else ''}: {r.content}"
                     for r in message.tool_results)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def recall_tools(max_chars: int) -> list[Tool]:
    """``recall_send`` and ``recall_compacted``, each answer within ``max_chars``."""

    @tool(safe_to_repeat=True)
    async def recall_send(send_index: int) -> str:
        """The exact messages of an earlier exchange (send), when the summary or the
        condensed history is not enough.

        Args:
            send_index: The send's number, counted from 0.
        """
        run = active_run("recall_send")
        if not 0 <= send_index < run.send_index:
            raise ToolError(f"Error: send_index must be between 0 and {run.send_index - 1}")
        records = await run.store.read_send_messages(run.session_id, send_index)
        return truncate(f"send {send_index}:\n\n{render_records(records)}", max_chars)

    @tool(safe_to_repeat=True)
    async def recall_compacted(page: int = 0) -> str:
        """Page through the exact messages of the history that was folded into the summary.

        Args:
            page: Which page, from 0 (oldest).
        """
        run = active_run("recall_compacted")
        fold = await run.store.latest_fold(run.session_id)
        if fold is None:
            return "Nothing has been folded in this session."
        pages = max(1, -(-fold.end_seq // PAGE_MESSAGES))
        if not 0 <= page < pages:
            raise ToolError(f"Error: page must be between 0 and {pages - 1}")
        records = await run.store.read_messages(run.session_id, from_seq=page * PAGE_MESSAGES,
                                                limit=min(PAGE_MESSAGES,
                                                          fold.end_seq - page * PAGE_MESSAGES))
        header = (f"folded history (sends 0-{fold.end_send - 1}), page {page} of "
                  f"{pages - 1}:\n\n")
        return truncate(header + render_records(records), max_chars)

    return [recall_send, recall_compacted]
