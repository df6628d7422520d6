"""A child process for the MCP tests: one send (or resume) with the test MCP server.

Run as ``python -m tests.mcp.agent_child '<json>'`` (see :class:`McpArgs`). It writes
its result and the model's requests (canonical JSON, and JSON in the request's own key
order) to ``out``; the test's SIGKILL ends it with no output at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from power_loop import (
    AgentLoopConfig,
    ScriptedLLM,
    StatefulAgentLoop,
    Turn,
    call_tool,
    call_tools,
    open_store,
    reply,
)
from tests.mcp.support import stdio_server

SCRIPTS: dict[str, list[str | Turn]] = {
    "hello": [call_tool("t__echo", {"text": "hi"}), reply("done")],
    "both": [call_tools(("t__wait_read", {"tag": "r"}), ("t__wait_write", {"tag": "w"})),
             reply("done")],
    "answer": [reply("done")],
}


@dataclass(frozen=True, slots=True)
class McpArgs:
    """What one process does: ``op`` is ``send`` (``hello`` to ``session_id``) or
    ``resume``; ``script`` names the model's turns in :data:`SCRIPTS`; ``tmp`` is the
    server's log directory (``tmp/marks`` its marks)."""

    dsn: str
    prefix: str
    session_id: str
    op: str
    script: str
    tmp: str
    out: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


async def run(args: McpArgs) -> dict[str, Any]:
    tmp = Path(args.tmp)
    server = stdio_server(tmp, mark=tmp / "marks")
    llm = ScriptedLLM(SCRIPTS[args.script])
    async with await open_store(args.dsn, table_prefix=args.prefix) as store:
        loop = StatefulAgentLoop(llm=llm, store=store, tools=[server],
                                 config=AgentLoopConfig(lease_ttl=1.0))
        try:
            if args.op == "send":
                result = await loop.send("hello", args.session_id)
            else:
                resumed = await loop.resume(args.session_id)
                assert resumed is not None, "nothing to resume"
                result = resumed
        finally:
            await server.aclose()
    return {"final_text": result.final_text,
            "canonical": [r.canonical_bytes().decode() for r in llm.requests],
            "ordered": [json.dumps(r.to_json(), ensure_ascii=False) for r in llm.requests]}


def main(argv: list[str]) -> int:
    args = McpArgs(**json.loads(argv[1]))
    try:
        report = asyncio.run(run(args))
        code = 0
    except Exception as exc:
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(report))
    tmp.replace(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
