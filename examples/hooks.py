"""Hooks: a guardrail that vetoes a tool call, and a cache that answers model calls.

    python examples/hooks.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from _common import data_dir

from power_loop import (
    AgentLoopConfig,
    Hooks,
    LLMRequest,
    LLMResponse,
    ScriptedLLM,
    SendContext,
    StatefulAgentLoop,
    ToolCallPart,
    ToolContext,
    ToolResultPart,
    Veto,
    call_tool,
    reply,
    tool,
)


@tool
def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: The file to delete.
    """
    raise AssertionError("the guardrail never lets this run")


class Guardrail(Hooks):
    """Nothing under /etc may be deleted: the model reads why, and answers accordingly."""

    async def on_tool_start(self, ctx: ToolContext, call: ToolCallPart,
                            ) -> ToolCallPart | ToolResultPart | Veto | None:
        if call.name == "delete_file" and json.loads(call.arguments)["path"].startswith("/etc"):
            return Veto("Refused: files under /etc may not be deleted.")
        return None


class AnswerCache(Hooks):
    """The same question (the same request bytes) is answered once by the model."""

    def __init__(self) -> None:
        self.answers: dict[bytes, LLMResponse] = {}
        self.hits = 0

    async def on_model_request(self, ctx: SendContext, request: LLMRequest,
                               ) -> LLMRequest | LLMResponse | Veto | None:
        key = _question(request)
        if key in self.answers:
            self.hits += 1
            return self.answers[key]  # stored as the answer; the model is not called
        return None

    async def on_model_response(self, ctx: SendContext, request: LLMRequest,
                                response: LLMResponse) -> LLMResponse | None:
        self.answers.setdefault(_question(request), response)
        return None


def _question(request: LLMRequest) -> bytes:
    # The last message only: a real cache would key on the whole canonical request.
    return request.messages[-1].text.encode()


def script(request: LLMRequest) -> Any:
    last = request.messages[-1]
    if last.role == "tool":
        return reply(f"I could not: {last.tool_results[0].content}")
    if "delete" in last.text:
        return call_tool("delete_file", {"path": "/etc/passwd"})
    return reply("Paris is the capital of France.")


async def main() -> None:
    cache = AnswerCache()
    llm = ScriptedLLM(script)
    config = AgentLoopConfig(hooks=[Guardrail(), cache])
    dsn = str(data_dir("hooks") / "hooks.db")
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=[delete_file], config=config) as loop:
        sid = await loop.new_session()
        result = await loop.send("Please delete /etc/passwd", session_id=sid)
        print("guardrail:", result.final_text)
        for _ in range(3):
            result = await loop.send("What is the capital of France?", session_id=sid)
        print("cache:", result.final_text)
        print(f"model calls: {len(llm.requests)}, cache hits: {cache.hits}")
        assert cache.hits == 2


if __name__ == "__main__":
    asyncio.run(main())
