"""A session feed for a web page: a sender and a watcher, and a watcher that reconnects.

    python examples/watch_feed.py

One task sends, through its own loop (in a real application: another process, or a
worker); another follows the session with ``loop.watch`` as a web page's server would,
stops half-way (the browser went away), and picks up from the last cursor it saw, on a
fresh loop: nothing is missed, nothing comes twice. Then the session's token usage,
priced by a price table.
"""

from __future__ import annotations

import asyncio

from _common import data_dir

from power_loop import (
    FeedItem,
    FeedMessage,
    FeedSend,
    FeedWait,
    ModelPrice,
    PriceTable,
    ScriptedLLM,
    StatefulAgentLoop,
    call_tool,
    reply,
    tool,
)


@tool(safe_to_repeat=True)
def weather(city: str) -> str:
    """Today's weather in a city."""
    return {"Lisbon": "sunny, 24 C"}.get(city, "unknown")


def show(item: FeedItem) -> str:
    if isinstance(item, FeedMessage):
        message = item.message
        text = message.text or ", ".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
        if message.tool_results:
            text = message.tool_results[0].content
        return f"  #{item.seq} {message.role}: {text}"
    if isinstance(item, FeedWait):  # a tool call waiting for a person, then decided
        return f"  {item.tool_name} {item.status}"
    assert isinstance(item, FeedSend)
    if item.finished:
        return (f"  send {item.send_index} {item.status} ({item.stop_reason}, "
                f"{item.usage.total_tokens} tokens)")
    return f"  send {item.send_index} started by {item.source}"


async def sender(dsn: str, sid: str) -> None:
    llm = ScriptedLLM([call_tool("weather", {"city": "Lisbon"}),
                       reply("It is sunny in Lisbon, 24 C."),
                       reply("You are welcome!")], model="example-model")
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[weather]) as loop:
        await loop.send("What is the weather in Lisbon?", sid)
        await loop.send("Thanks!", sid)


async def watch_until(dsn: str, sid: str, after: str | None, stop: int) -> str | None:
    """Follow the feed until ``stop`` items were seen; return the last cursor."""
    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn) as loop:
        seen = 0
        async for item in loop.watch(sid, after=after, poll=(0.02, 0.5)):
            print(show(item))
            after, seen = item.cursor, seen + 1
            if seen == stop:
                break
    return after


async def main() -> None:
    dsn = str(data_dir("watch_feed") / "app.db")
    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn) as loop:
        sid = await loop.new_session()

    print("a page follows the session while another task sends:")
    sending = asyncio.create_task(sender(dsn, sid))
    cursor = await watch_until(dsn, sid, None, stop=4)
    print(f"(the page went away; it kept the cursor {cursor})")
    await sending
    print("it comes back, from that cursor:")
    await watch_until(dsn, sid, cursor, stop=6)

    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn) as loop:
        usage = await loop.usage(sid)
        prices = PriceTable({"example-model": ModelPrice("3", "15")})
        print(f"usage: {usage.total.input_tokens} input and {usage.total.output_tokens} "
              f"output tokens in {usage.model_calls} model calls; cost "
              f"${usage.cost(prices)}")


if __name__ == "__main__":
    asyncio.run(main())
