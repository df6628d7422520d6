"""A session with a tool call, continued by a second loop that knows only the DSN.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio

from _common import data_dir, pick_llm

from power_loop import AgentLoopConfig, ScriptedLLM, StatefulAgentLoop, call_tool, reply, tool


@tool(safe_to_repeat=True)
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


async def main() -> None:
    dsn = str(data_dir("quickstart") / "app.db")
    llm = pick_llm(ScriptedLLM([
        call_tool("add", {"a": 2, "b": 3}, text="Adding."),
        reply("2 + 3 = 5."),
        reply("You asked me to add 2 and 3; the answer was 5."),
    ]))
    config = AgentLoopConfig(system_prompt="You are a careful calculator. Use the add tool.")

    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[add], config=config) as loop:
        sid = await loop.new_session()
        result = await loop.send("What is 2 + 3?", session_id=sid)
        print(f"send #{result.send_index}: {result.final_text!r} "
              f"({result.rounds} model calls, {result.usage.total_tokens} tokens)")

    # A different loop object, as a different web request or process would build it.
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[add], config=config) as loop:
        result = await loop.send("What did I ask you?", session_id=sid)
        print(f"send #{result.send_index}: {result.final_text!r}")
        for item in await loop.history(sid):
            message = item.message
            shown = message.text or "; ".join(
                [f"call {c.name}({c.arguments})" for c in message.tool_calls]
                + [f"result {r.content}" for r in message.tool_results])
            print(f"  {item.seq} send {item.send_index} {message.role:<9} {shown}")


if __name__ == "__main__":
    asyncio.run(main())
