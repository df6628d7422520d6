"""How the CLI shows records: aligned text tables for people, JSON for scripts.

Times are UTC. JSON output uses ISO 8601 with the offset and keeps every field; text
output trims to what fits a terminal line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from power_loop.store import SendRecord, SessionRecord
from power_loop.timers import TimerRecord


def when(value: datetime | None) -> str:
    """A timestamp for a table cell: ``2025-01-31 17:05:09`` (UTC), or ``-``."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str | None:
    """A timestamp for JSON output: ISO 8601 with its UTC offset."""
    return None if value is None else value.astimezone(UTC).isoformat()


def compact(value: Any, limit: int = 60) -> str:
    """``value`` as one line of compact JSON, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 60) -> str:
    """``text`` on one line (newlines shown as ``\\n``), cut to ``limit`` characters."""
    flat = text.replace("\r\n", "\n").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, headers first; no trailing spaces."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def session_dict(record: SessionRecord) -> dict[str, Any]:
    """A session row for JSON output, with its message and send counts."""
    return {
        "id": record.id,
        "parent_id": record.parent_id,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "messages": record.next_seq,
        "sends": record.send_count,
        "pending_send": record.pending_send,
        "lease_owner": record.lease_owner,
        "lease_epoch": record.lease_epoch,
        "lease_expires_at": iso(record.lease_expires_at),
        "resume_attempts": record.resume_attempts,
        "parked_at": iso(record.parked_at),
        "system_prompt": record.system_prompt,
        "metadata": dict(record.metadata),
    }


def send_dict(record: SendRecord) -> dict[str, Any]:
    """A send row for JSON output."""
    return {
        "send_index": record.send_index,
        "status": record.status,
        "source": record.source,
        "request_key": record.request_key,
        "first_seq": record.first_seq,
        "created_at": iso(record.created_at),
        "finished_at": iso(record.finished_at),
        "stop_reason": record.stop_reason,
        "rounds": record.rounds,
        "usage": dict(record.usage),
        "error": None if record.error is None else dict(record.error),
    }


def timer_dict(record: TimerRecord) -> dict[str, Any]:
    """A timer row for JSON output."""
    return {
        "timer_id": record.timer_id,
        "session_id": record.session_id,
        "status": record.status,
        "due_at": iso(record.due_at),
        "every": record.every,
        "missed": record.missed,
        "fire_count": record.fire_count,
        "attempts": record.attempts,
        "claim_owner": record.claim_owner,
        "claim_epoch": record.claim_epoch,
        "last_error": None if record.last_error is None else dict(record.last_error),
        "message": record.message,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def pending(record: SessionRecord) -> str:
    """The pending-send cell: ``-``, ``#3``, or ``#3 parked`` (workers gave up on it)."""
    if record.pending_send is None:
        return "-"
    return f"#{record.pending_send}" + (" parked" if record.parked_at is not None else "")


def print_json(value: Any) -> None:
    """Write ``value`` to stdout as indented JSON (UTF-8 kept as is)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
