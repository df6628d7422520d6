"""Shared pieces of the hook tests: a deterministic model and tool, a fold strategy that
needs no model, a hook that records every point it reaches, and the stored history in a
form two sessions can be compared by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from power_loop import (
    AgentLoopConfig,
    FoldJob,
    FoldOutcome,
    Hooks,
    LLMRequest,
    LLMResponse,
    ScriptedLLM,
    SendContext,
    SendCost,
    SendResult,
    StatefulAgentLoop,
    Store,
    Tool,
    ToolCallPart,
    ToolContext,
    ToolResultPart,
    Turn,
    call_tool,
    reply,
    tool,
)

LONG = "x" * 200
"""Padding that makes a few sends go over the small context budget (so a fold runs)."""
BUDGET = 150


def answer(request: LLMRequest) -> Turn:
    """The model: ``use KEY`` calls ``lookup``; a tool result is echoed; anything else too.

    It depends only on the request, so every process answers alike at the same point.
    """
    last = request.messages[-1]
    if last.role == "tool":
        return reply("done: " + last.tool_results[0].content)
    text = last.text
    if text.startswith("use "):
        return call_tool("lookup", {"key": text.split()[1]})
    return reply("echo: " + text[:40])


def make_lookup(calls: list[str]) -> Tool:
    @tool(safe_to_repeat=True)
    def lookup(key: str) -> str:
        """Look a key up.

        Args:
            key: The key.
        """
        calls.append(key)
        return f"value of {key}"

    return lookup


class FixedFold:
    """Folds the oldest send into a fixed summary, without a model."""

    name = "fixed"

    def __init__(self) -> None:
        self.calls = 0

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        return 1

    async def fold(self, job: FoldJob) -> FoldOutcome:
        self.calls += 1
        return FoldOutcome(f"summary of sends up to {job.sends[-1][0]}")


def make_loop(store: Store, hooks: Sequence[Any], *, calls: list[str] | None = None,
              fold: FixedFold | None = None, **config: Any) -> StatefulAgentLoop:
    """A loop on the test's store: the scripted model, ``lookup``, optionally a fold."""
    if fold is not None:
        config.update(fold_strategy=fold, context_budget_tokens=BUDGET)
    return StatefulAgentLoop(llm=ScriptedLLM(answer), store=store,
                             tools=[make_lookup(calls if calls is not None else [])],
                             config=AgentLoopConfig(hooks=list(hooks), **config))


async def history_of(store: Store, session_id: str) -> list[tuple[int, str, Any]]:
    """Every stored message as ``(send_index, role, body)``."""
    return [(r.send_index, r.role, r.body) for r in await store.read_messages(session_id)]


Action = Callable[..., Any]


class Recorder(Hooks):
    """Records each point it reaches in ``log`` as ``name:point``; ``act`` may answer.

    ``act(point, *args)`` returns what the hook returns (``None``: go on unchanged).
    """

    def __init__(self, log: list[str], name: str = "h", act: Action | None = None) -> None:
        self.log = log
        self.name = name
        self.act = act

    async def _at(self, point: str, *args: Any) -> Any:
        self.log.append(f"{self.name}:{point}")
        return self.act(point, *args) if self.act is not None else None

    async def on_send_start(self, ctx: SendContext, text: str) -> Any:
        return await self._at("on_send_start", ctx, text)

    async def on_send_end(self, ctx: SendContext, result: SendResult) -> None:
        await self._at("on_send_end", ctx, result)

    async def on_model_request(self, ctx: SendContext, request: LLMRequest) -> Any:
        return await self._at("on_model_request", ctx, request)

    async def on_model_response(self, ctx: SendContext, request: LLMRequest,
                                response: LLMResponse) -> Any:
        return await self._at("on_model_response", ctx, request, response)

    async def on_tool_start(self, ctx: ToolContext, call: ToolCallPart) -> Any:
        return await self._at("on_tool_start", ctx, call)

    async def on_tool_end(self, ctx: ToolContext, call: ToolCallPart,
                          result: ToolResultPart) -> Any:
        return await self._at("on_tool_end", ctx, call, result)

    async def on_fold_start(self, job: FoldJob) -> Any:
        return await self._at("on_fold_start", job)

    async def on_fold_end(self, job: FoldJob, outcome: FoldOutcome) -> Any:
        return await self._at("on_fold_end", job, outcome)


def points(log: Sequence[str]) -> list[str]:
    """The points of a log, without the hooks' names."""
    return [entry.split(":", 1)[1] for entry in log]


async def fill(loop: StatefulAgentLoop, session_id: str, sends: int = 2) -> None:
    """Long plain sends, so that the next send is over the context budget."""
    for i in range(sends):
        await loop.send(f"{LONG} {i}", session_id=session_id)
