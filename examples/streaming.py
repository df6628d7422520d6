"""Streaming typed events, and cancelling a send half-way.

    python examples/streaming.py
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from _common import data_dir, pick_llm

from power_loop import (
    ScriptedLLM,
    SendFinished,
    StatefulAgentLoop,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
    Turn,
    call_tool,
    reply,
    tool,
)


@tool(safe_to_repeat=True)
def lookup(term: str) -> str:
    """Look a term up in the glossary."""
    return {"WAL": "write-ahead log"}.get(term, "unknown term")


async def main() -> None:
    dsn = str(data_dir("streaming") / "app.db")
    llm = pick_llm(ScriptedLLM([
        call_tool("lookup", {"term": "WAL"}),
        reply("WAL stands for write-ahead log: changes are appended to a log first."),
        Turn(text="This answer is long and slow, and it will be cut short by the user. " * 3,
             chunks=40, chunk_delay=0.01),
    ], chunk_size=8))
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[lookup]) as loop:
        sid = await loop.new_session()
        async for event in loop.stream("What is WAL?", session_id=sid):
            if isinstance(event, TextChunk):
                print(event.text, end="", flush=True)
            elif isinstance(event, ToolCallStarted):
                print(f"[{event.name}({event.arguments})]", end=" ", flush=True)
            elif isinstance(event, ToolCallFinished):
                print(f"[-> {event.output}]")
            elif isinstance(event, SendFinished):
                print(f"\n(done: {event.result.usage.total_tokens} tokens)")

        # Leaving a stream early cancels the send; its partial answer is kept, marked.
        # aclosing() makes the cancellation complete before the block is left.
        received = 0
        async with aclosing(loop.stream("Tell me more.", session_id=sid)) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    received += 1
                    if received == 5:
                        break
        last = (await loop.history(sid))[-1].message
        print(f"stopped after 5 chunks; stored: {last.text!r} (partial={last.meta['partial']})")


if __name__ == "__main__":
    asyncio.run(main())
