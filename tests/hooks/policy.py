"""A hook that does one of each kind at each point, deterministically, and logs every
point it reaches (with the process id) to a JSON Lines file.

Used in-process and by :mod:`tests.hooks.hook_child`, so a run that crashed and was
resumed in another process can be compared with one that never crashed.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from power_loop import (
    FoldJob,
    FoldOutcome,
    LLMRequest,
    LLMResponse,
    Message,
    SendContext,
    SendResult,
    StopReason,
    ToolCallPart,
    ToolContext,
    ToolResultPart,
    Usage,
    Veto,
)
from tests.hooks.support import Recorder


def log_line(path: str, line: dict[str, Any]) -> None:
    """Append one line with a single ``write`` (O_APPEND), safe across processes."""
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_log(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as lines:
        return [json.loads(line) for line in lines]


class Policy(Recorder):
    """Every kind of hook, decided by the conversation alone.

    * send: ``secret`` becomes ``[redacted]`` in the user's text (modify);
    * model call: the system prompt gets a suffix, for that call only (modify); a user
      message saying ``cached`` is answered from a "cache" (short-circuit); the answer's
      ``echo`` becomes ``ECHO`` (modify after);
    * tool call: key ``forbidden`` is vetoed, ``cached`` answered without the tool,
      any other key lowercased (modify); every result gets `` (seen)`` (modify after);
    * fold: the summary gets `` (hooked)`` (modify after).
    """

    def __init__(self, path: str) -> None:
        super().__init__([])
        self.path = path

    async def _at(self, point: str, *args: Any) -> Any:
        log_line(self.path, {"point": point, "pid": os.getpid()})
        return None

    async def on_send_start(self, ctx: SendContext, text: str) -> Any:
        await self._at("on_send_start")
        return text.replace("secret", "[redacted]")

    async def on_send_end(self, ctx: SendContext, result: SendResult) -> None:
        await self._at("on_send_end")

    async def on_model_request(self, ctx: SendContext, request: LLMRequest) -> Any:
        await self._at("on_model_request")
        last = request.messages[-1]
        if last.role == "user" and "cached" in last.text:
            return LLMResponse(Message.assistant("from the cache"), Usage(),
                               StopReason.END_TURN)
        return replace(request, system=(request.system or "") + " [hooked]")

    async def on_model_response(self, ctx: SendContext, request: LLMRequest,
                                response: LLMResponse) -> Any:
        await self._at("on_model_response")
        message = response.message
        if not message.text.startswith("echo"):
            return None
        changed = Message.assistant("ECHO" + message.text[4:])
        return replace(response, message=changed)

    async def on_tool_start(self, ctx: ToolContext, call: ToolCallPart) -> Any:
        await self._at("on_tool_start")
        key = json.loads(call.arguments)["key"]
        if key == "forbidden":
            return Veto("that key is forbidden")
        if key == "cached":
            return ToolResultPart(call.id, call.name, "cached value")
        return ToolCallPart(call.id, call.name, json.dumps({"key": key.lower()}))

    async def on_tool_end(self, ctx: ToolContext, call: ToolCallPart,
                          result: ToolResultPart) -> Any:
        await self._at("on_tool_end")
        return replace(result, content=result.content + " (seen)")

    async def on_fold_start(self, job: FoldJob) -> Any:
        await self._at("on_fold_start")
        return None

    async def on_fold_end(self, job: FoldJob, outcome: FoldOutcome) -> Any:
        await self._at("on_fold_end")
        return replace(outcome, summary=outcome.summary + " (hooked)")
