"""A process that approves calls when told to, for the concurrent-approval test.

Run as ``python -m tests.approvals.approver DSN PREFIX EFFECTS``. It reads one JSON
command per line on stdin (``{"session_id": ..., "call_id": ...}``), approves that call
with a real loop, and answers one JSON line on stdout: ``{"won": true, "final_text":
...}``, or ``{"won": false, "code": ...}`` when another process decided first. The tool
it runs appends one line per run to ``EFFECTS`` (O_APPEND, one ``write``), so runs are
counted across processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from power_loop import (
    LLMRequest,
    PowerLoopError,
    ScriptedLLM,
    StatefulAgentLoop,
    Tool,
    ToolContext,
    Turn,
    call_tool,
    reply,
    tool,
)
from tests.durability.child import record

TOOL = "transfer"


def model(request: LLMRequest) -> Turn:
    """Call the gated tool for each user message; after its result, say done."""
    last = request.messages[-1]
    if last.role == "tool":
        return reply("done: " + last.tool_results[0].content)
    return call_tool(TOOL, {"tag": last.text})


def make_tool(effects: str) -> Tool:
    @tool(name=TOOL, requires_approval=True)
    async def transfer(tag: str, ctx: ToolContext) -> str:
        """Move money (needs approval).

        Args:
            tag: What to move.
        """
        record(effects, {"call_id": ctx.call_id, "send_index": ctx.send_index,
                         "pid": os.getpid()})
        return f"moved {tag}"

    return transfer


async def serve(dsn: str, prefix: str, effects: str) -> None:
    async with StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn, table_prefix=prefix,
                                 tools=[make_tool(effects)]) as loop:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            command = json.loads(line)
            try:
                result = await loop.approve(command["session_id"], command["call_id"])
                answer = {"won": True, "final_text": result.final_text,
                          "status": result.status}
            except PowerLoopError as exc:
                answer = {"won": False, "code": exc.code,
                          "same_moment": "at the same moment" in exc.message}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(*sys.argv[1:4]))
