"""In-process pieces of the worker tests: a scripted agent, a running worker, waiting.

Everything runs on the test's real store (every backend); the worker is the library's
own :class:`~power_loop.worker.Worker` driving a real :class:`~power_loop.StatefulAgentLoop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from conformance.waiting import eventually
from power_loop import (
    AgentLoopConfig,
    Event,
    LLMRequest,
    LLMUnavailableError,
    ScriptedLLM,
    SendRecord,
    StatefulAgentLoop,
    Store,
    Tool,
    ToolContext,
    Turn,
    call_tool,
    fail,
    reply,
    tool,
)
from power_loop.timers import TimerClaim
from power_loop.worker import Worker, WorkerStats

E = TypeVar("E", bound=Event)
TOOL = "[tool]"


class Agent:
    """A scripted model and a ``work`` tool whose pace and health the test sets.

    After a user message holding ``[tool]`` the model calls ``work``; after a tool result
    it says ``done: <result>``; after any other user message it says ``ack: <text>``.

    Attributes:
        model_delay: Seconds each model answer takes.
        tool_sleep: Seconds the tool takes.
        go_on: When set to an event, the tool first waits for it, then notes its tag in
            ``went_on`` (proof that it was let run on), then takes ``tool_sleep``.
        failing: While set, every model call fails (``LLMUnavailableError``).
        running: Tool calls in progress now; ``most``: the most at once.
    """

    def __init__(self, *, model_delay: float = 0.0, tool_sleep: float = 0.0) -> None:
        self.model_delay = model_delay
        self.tool_sleep = tool_sleep
        self.failing = False
        self.running = 0
        self.most = 0
        self.tool_runs: list[str] = []
        self.go_on: asyncio.Event | None = None
        self.went_on: list[str] = []
        self.llm = ScriptedLLM(self.script)

    def script(self, request: LLMRequest) -> Turn:
        if self.failing:
            return fail(LLMUnavailableError("the model is down", provider="scripted"))
        last = request.messages[-1]
        if last.role == "tool":
            return reply("done: " + last.tool_results[0].content, delay=self.model_delay)
        if TOOL in last.text:
            return call_tool("work", {"tag": last.text}, delay=self.model_delay)
        return reply("ack: " + last.text, delay=self.model_delay)

    def tools(self) -> list[Tool]:
        @tool
        async def work(tag: str, ctx: ToolContext) -> str:
            """Work that takes a while.

            Args:
                tag: What about.
            """
            self.tool_runs.append(tag)
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                if self.go_on is not None:
                    await self.go_on.wait()
                    self.went_on.append(tag)
                await asyncio.sleep(self.tool_sleep)
            finally:
                self.running -= 1
            return f"worked on {tag}"

        return [work]

    def loop(self, store: Store, **config: Any) -> StatefulAgentLoop:
        return StatefulAgentLoop(llm=self.llm, store=store, tools=self.tools(),
                                 config=AgentLoopConfig(**config))


class Events:
    """A sink keeping every event it receives."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.seen.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.seen if isinstance(e, kind)]


def worker(store: Store, loop: StatefulAgentLoop, **options: Any) -> Worker:
    """A worker on the test's store running ``loop`` (fast polls unless told)."""
    options.setdefault("poll_interval", 0.05)
    options.setdefault("claim_ttl", 2.0)
    return Worker(store=store, loop_factory=lambda _store: loop, **options)


@asynccontextmanager
async def running(work: Worker) -> AsyncIterator[asyncio.Task[WorkerStats]]:
    """Run the worker for the block; stop it (and wait for it) afterwards."""
    task = asyncio.create_task(work.run())
    try:
        yield task
    finally:
        if not task.done():
            work.request_stop()
        await asyncio.wait_for(task, 60)


async def claim_when_free(store: Store, owner: str, *, ttl: float) -> TimerClaim:
    """Claim the one due timer as ``owner``, as soon as any earlier claim of it lapsed."""
    claims: list[TimerClaim] = []

    async def claimed() -> bool:
        claims.extend(await store.claim_due_timers(owner, ttl=ttl, limit=1))
        return bool(claims)

    await eventually(claimed, f"{owner} to claim the due timer")
    (claim,) = claims
    return claim


def utcnow() -> datetime:
    return datetime.now(UTC)


async def timer_sends(store: Store, session_id: str) -> list[SendRecord]:
    return [s for s in await store.list_sends(session_id) if s.source == "timer"]


async def user_texts(store: Store, session_id: str) -> list[tuple[str, str | None]]:
    """``(text, source)`` of each user message of the session."""
    return [(m.body["parts"][0]["text"], m.body["meta"].get("source"))
            for m in await store.read_messages(session_id) if m.role == "user"]


async def answers(store: Store, session_id: str) -> list[str]:
    """The final answers stored (assistant messages without tool calls)."""
    return [p["text"] for m in await store.read_messages(session_id) if m.role == "assistant"
            for p in m.body["parts"] if p["kind"] == "text"
            and not any(q["kind"] == "tool_call" for q in m.body["parts"])]


def keys(sends: Sequence[SendRecord]) -> list[str | None]:
    return [s.request_key for s in sends]
