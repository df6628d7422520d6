"""An MCP server's tools in an agent loop: discovery, policies from annotations, an
approval for a destructive tool, and the same tool list in a loop built later.

    python examples/mcp_tools.py

Needs the mcp extra (``pip install 'power-loop[mcp]'``). The server is a tiny one
beside this file (``_mcp_weather_server.py``), started over stdio.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from _common import data_dir, pick_llm

from power_loop import (
    MCPServer,
    MCPToolPolicy,
    ScriptedLLM,
    StatefulAgentLoop,
    call_tool,
    call_tools,
    reply,
)

SERVER = Path(__file__).resolve().with_name("_mcp_weather_server.py")


async def main() -> None:
    dsn = str(data_dir("mcp") / "app.db")
    weather = MCPServer.stdio(
        "weather", sys.executable, [str(SERVER)], timeout=20,
        # Unannotated, so unsafe to repeat by default; this one we know is idempotent.
        overrides={"order_umbrella": MCPToolPolicy(safe_to_repeat=True)})
    llm = pick_llm(ScriptedLLM([
        call_tools(("weather__forecast", {"city": "Lyon"}),
                   ("weather__order_umbrella", {"city": "Lyon"})),
        call_tool("weather__cancel_picnic", {"city": "Lyon"}),
        reply("Rain tomorrow: I ordered an umbrella and cancelled the picnic."),
        reply("It will rain in Lyon."),
    ]))

    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[weather]) as loop:
        sid = await loop.new_session(system_prompt="Plan my day in Lyon. Use the tools.")
        result = await loop.send("Will it rain tomorrow? Get ready if so.", session_id=sid)
        print(f"stop reason: {result.stop_reason}")  # cancel_picnic is destructive
        for tool in loop.tools:
            print(f"  {tool.name:<26} safe_to_repeat={tool.safe_to_repeat!s:<5} "
                  f"requires_approval={tool.requires_approval}")
        for wait in await loop.waiting_for(sid):
            print(f"a person approves {wait.tool_name}({wait.arguments})")
            result = await loop.approve(sid, wait.wait_id)
        print(f"answer: {result.final_text!r}")

    # A loop built later (another request, another process) offers the same tools, in
    # the same order: the request is the same, byte for byte.
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[weather]) as loop:
        result = await loop.send("In one line?", session_id=sid)
        print(f"answer: {result.final_text!r}")
        for item in await loop.history(sid):
            for part in item.message.tool_results:
                print(f"  result of {part.name}: {part.content}")
    await weather.aclose()


if __name__ == "__main__":
    asyncio.run(main())
