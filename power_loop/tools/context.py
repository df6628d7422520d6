"""What a running tool can know about the call it serves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Passed to a tool that declares a parameter annotated ``ToolContext``.

    Attributes:
        session_id: The session the call belongs to.
        send_index: The send the call belongs to.
        call_id: The model's id for this call.
        tool_name: The tool's name.
        idempotency_key: ``"<session_id>:<send_index>:<call_id>"``: the same on every
            attempt of this call, in any process. Give it to the systems your tool
            changes so that a repeated call is recognised.
        attempt: 1 normally; 2 or more when the call is run again after a crash (only
            tools declared ``safe_to_repeat`` are).
        session_metadata: The session's metadata.
    """

    session_id: str
    send_index: int
    call_id: str
    tool_name: str
    idempotency_key: str
    attempt: int = 1
    session_metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @staticmethod
    def key_for(session_id: str, send_index: int, call_id: str) -> str:
        return f"{session_id}:{send_index}:{call_id}"
