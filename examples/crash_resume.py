"""A process is killed mid-tool; a fresh process resumes the send.

    python examples/crash_resume.py

The child process runs a send whose tool records a side effect and then hangs; the
parent kills it with SIGKILL, then resumes the pending send in-process. The tool is not
safe to repeat, so it is not run again: the model is told its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import data_dir

from power_loop import (
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    ToolContext,
    Turn,
    call_tool,
    reply,
    tool,
)


def model(request: LLMRequest) -> Turn:
    last = request.messages[-1]
    if last.role == "user":
        return call_tool("send_invoice", {"customer": "ACME"})
    if "unknown" in last.tool_results[0].content:
        return reply("The invoice may or may not have gone out; I will not send it twice. "
                     "Please check the outbox.")
    return reply("Invoice sent.")


def tools(outbox: Path, hang: bool) -> list[object]:
    @tool
    async def send_invoice(customer: str, context: ToolContext) -> str:
        """Send an invoice (not safe to repeat)."""
        with outbox.open("a") as f:
            f.write(json.dumps({"customer": customer, "key": context.idempotency_key}) + "\n")
        if hang:
            await asyncio.sleep(3600)
        return "sent"

    return [send_invoice]


async def child(dsn: str, sid: str, outbox: Path) -> None:
    async with StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn,
                                 tools=tools(outbox, hang=True)) as loop:  # type: ignore[arg-type]
        await loop.new_session(session_id=sid)
        await loop.send("Invoice ACME for March.", session_id=sid)


def crash_a_child(dsn: str, sid: str, outbox: Path) -> None:
    proc = subprocess.Popen([sys.executable, __file__, "child", dsn, sid, str(outbox)])
    while not outbox.exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"child killed (status {proc.returncode}) after the invoice went out")


async def resume(dsn: str, sid: str, outbox: Path) -> None:
    async with StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn,
                                 tools=tools(outbox, hang=False),  # type: ignore[arg-type]
                                 ) as loop:
        result = await loop.resume(sid)
        assert result is not None
        print(f"resumed: {result.final_text!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        asyncio.run(child(sys.argv[2], sys.argv[3], Path(sys.argv[4])))
    else:
        workdir = data_dir("crash")
        args = (str(workdir / "app.db"), "billing-1", workdir / "outbox.jsonl")
        crash_a_child(*args)
        asyncio.run(resume(*args))
        print(f"invoices in the outbox: {len(args[2].read_text().splitlines())} "
              "(not sent twice)")
