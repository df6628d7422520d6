"""The application the CLI decision tests continue sends with (``--app``)."""

from __future__ import annotations

from power_loop import (
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    ask_user_tool,
    call_tools,
    reply,
    tool,
)


def script(request: LLMRequest) -> Turn:
    """Delete a file and ask where to go, then report both results."""
    last = request.messages[-1]
    if last.role == "user":
        return call_tools(("delete_file", {"path": "/tmp/x"}),
                          ("ask_user", {"question": "Where to?"}))
    results = [m.tool_results[0].content for m in request.messages if m.role == "tool"]
    return reply(" | ".join(results))


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (pretend).

    Args:
        path: Which file.
    """
    return f"deleted {path}"


def make_loop(store: Store) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store,
                             tools=[delete_file, ask_user_tool()])
