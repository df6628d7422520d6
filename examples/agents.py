"""Sub-agents: a lead agent hands tasks to a researcher and a writer, in parallel.

    python examples/agents.py

Each agent runs in a child session of its own, linked to the call that started it; the
lead's stream carries the children's events, tagged with their session and depth, and
the whole tree stays in the store (a second loop, knowing only the DSN, prints it).
"""

from __future__ import annotations

import asyncio

from _common import data_dir

from power_loop import (
    AgentSpec,
    ChildEvent,
    LLMRequest,
    ScriptedLLM,
    SendFinished,
    StatefulAgentLoop,
    ToolCallStarted,
    Turn,
    call_tool,
    call_tools,
    reply,
    tool,
)


@tool(safe_to_repeat=True)
def search(query: str) -> str:
    """Search the team's notes.

    Args:
        query: What to look for.
    """
    return {"WAL": "SQLite's write-ahead log lets readers run while one writer appends."
            }.get(query, "nothing found")


def model(request: LLMRequest) -> Turn:
    """One offline model for every agent: it acts on the system prompt it is given."""
    last = request.messages[-1]
    if request.system == "You research.":
        if last.role == "tool":
            return reply(f"Found: {last.tool_results[0].content}")
        return call_tool("search", {"query": "WAL"})
    if request.system == "You write.":
        return reply("WAL: many readers, one writer, no blocking between them.")
    if last.role == "tool":  # the lead, once both agents answered
        answers = [r.content for m in request.messages if m.role == "tool"
                   for r in m.tool_results]
        return reply("Summary:\n- " + "\n- ".join(answers))
    return call_tools(
        ("spawn_agent", {"agent": "researcher", "task": "What does WAL do in SQLite?"}),
        ("spawn_agent", {"agent": "writer", "task": "Explain WAL in one line."}))


async def main() -> None:
    dsn = str(data_dir("agents") / "app.db")
    researcher = AgentSpec("researcher", "Finds facts in the team's notes.", "You research.",
                           tools=[search], max_rounds=4)
    writer = AgentSpec("writer", "Writes short, plain explanations.", "You write.",
                       agents=())  # the writer may not delegate in turn
    llm = ScriptedLLM(model)
    async with StatefulAgentLoop(llm=llm, dsn=dsn, agents=[researcher, writer]) as loop:
        sid = await loop.new_session(system_prompt="You lead a small team.")
        async for event in loop.stream("Brief me on WAL.", session_id=sid):
            if isinstance(event, ChildEvent):
                inner = event.event
                if isinstance(inner, ToolCallStarted):
                    print(f"{'  ' * event.depth}[{event.agent}] calls {inner.name}")
                elif isinstance(inner, SendFinished):
                    print(f"{'  ' * event.depth}[{event.agent}] answered: "
                          f"{inner.result.final_text}")
            elif isinstance(event, SendFinished):
                result = event.result
                print(f"\n{result.final_text}\n")
                print(f"tokens: {result.usage.total_tokens} in all, "
                      f"{result.children_usage.total_tokens} by the agents")

    # Any process with the DSN sees the persisted tree.
    async with StatefulAgentLoop(llm=llm, dsn=dsn) as reader:
        tree = await reader.session_tree(sid)
        for node in tree.walk():
            depth = node.link.depth if node.link else 0
            print(f"{'  ' * depth}{node.agent or 'lead'}: {node.session_id} ({node.status})")


if __name__ == "__main__":
    asyncio.run(main())
