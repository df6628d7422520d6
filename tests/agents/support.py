"""A planned tree of agents: a model that delegates as a plan says, and its expected answers.

A plan is a tree: each node is the tuple of its children's plans (``()`` is a leaf). Node
``0.2`` is the root's first child's third child. Every agent is ``worker`` (one spec,
delegating to itself). Its task says which node it is (``task 0.2``); the model then

* at a node with children: starts them all in one answer (``spawn_agent`` calls, which
  run at once), then answers ``node <path>[<their answers>]``;
* at a leaf: calls the unsafe ``work`` tool, then answers ``leaf <path>``.

The model depends only on the request, so a process resuming after a crash answers as
the dead one would have, and the root's answer is known in advance (:func:`expected`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from power_loop import (
    AgentLoopConfig,
    AgentSpec,
    LLMRequest,
    LLMUnavailableError,
    ScriptedLLM,
    SendResult,
    StatefulAgentLoop,
    Store,
    ToolContext,
    Turn,
    Usage,
    call_tool,
    call_tools,
    fail,
    reply,
    tool,
)
from power_loop.events.types import Event
from power_loop.llm.messages import decode_message
from power_loop.loop.driver import CANCEL_MEANS_RELEASE
from power_loop.store.children import SessionTree, child_session_id
from tests.durability.child import record

Plan = tuple["Plan", ...]
Path = tuple[int, ...]
WORKER = "worker"
ROOT_TASK = "task"
Work = Callable[[Callable[[Event], None]], Awaitable[SendResult | None]]


def label(path: Path) -> str:
    return ".".join(map(str, path))


def task_for(path: Path) -> str:
    return f"task {label(path)}" if path else ROOT_TASK


def path_of(task: str) -> Path:
    rest = task.removeprefix(ROOT_TASK).strip()
    return tuple(int(p) for p in rest.split(".")) if rest else ()


def node_at(plan: Plan, path: Path) -> Plan:
    for i in path:
        plan = plan[i]
    return plan


def expected(plan: Plan, path: Path = ()) -> str:
    """The answer of node ``path``."""
    node = node_at(plan, path)
    if not node:
        return f"leaf {label(path)}"
    inner = ",".join(expected(plan, (*path, i)) for i in range(len(node)))
    return f"node {label(path)}[{inner}]"


def count_nodes(plan: Plan) -> int:
    return 1 + sum(count_nodes(child) for child in plan)


@dataclass
class TreeModel:
    """The planned model and the ``work`` tool, with the log of the tool's runs."""

    plan: Plan
    delay: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False
    """While set, the agents' model calls fail (the root's do not)."""
    gate: asyncio.Event | None = None
    """If set, ``work`` waits for it (after recording its run)."""
    effects: str | None = None
    """If set, ``work`` also records its start and its effect in this JSON Lines file
    (shared by processes)."""
    tool_sleep: float = 0.0
    """Seconds ``work`` takes between its start and its effect."""
    safe: bool = False
    """Declare ``work`` safe to repeat."""

    def __post_init__(self) -> None:
        self.llm = ScriptedLLM(self.script)

    def script(self, request: LLMRequest) -> Turn:
        path = path_of(request.messages[0].text)
        if self.failing and path:
            return fail(LLMUnavailableError("the model is down", provider="scripted"))
        node = node_at(self.plan, path)
        last = request.messages[-1]
        if last.role == "tool":
            if not node:
                return reply(f"leaf {label(path)}", delay=self.delay)
            answers = [r.content for m in request.messages if m.role == "tool"
                       for r in m.tool_results]
            return reply(f"node {label(path)}[{','.join(answers)}]", delay=self.delay)
        if not node:
            return call_tool("work", {"tag": label(path)}, delay=self.delay)
        return call_tools(*[("spawn_agent", {"agent": WORKER, "task": task_for((*path, i))})
                            for i in range(len(node))], delay=self.delay)

    def spec(self, **options: Any) -> AgentSpec:
        runs = self.runs

        @tool(safe_to_repeat=self.safe)
        async def work(tag: str, ctx: ToolContext) -> str:
            """Do a leaf's work.

            Args:
                tag: The leaf.
            """
            facts = {"tag": tag, "session_id": ctx.session_id, "call_id": ctx.call_id,
                     "attempt": ctx.attempt, "pid": os.getpid()}
            runs.append(facts)
            if self.effects is not None:
                record(self.effects, {"event": "start", **facts})
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.tool_sleep)
            if self.effects is not None:
                record(self.effects, {"event": "effect", **facts})
            return f"worked {tag}"

        return AgentSpec(WORKER, "Does one node of the plan.", "You are a worker.",
                         tools=[work], **options)

    def loop_on(self, dsn: str, **config: Any) -> StatefulAgentLoop:
        """Like :meth:`loop`, on a store the loop opens itself."""
        return StatefulAgentLoop(llm=self.llm, dsn=dsn, agents=[self.spec()],
                                 config=AgentLoopConfig(**config))

    def loop(self, store: Store, **config: Any) -> StatefulAgentLoop:
        config.setdefault("max_agent_depth", 3)
        config.setdefault("max_agents_per_send", 3)
        return StatefulAgentLoop(llm=self.llm, store=store, agents=[self.spec()],
                                 config=AgentLoopConfig(**config))


async def run_until(work: Work, crash_at: int | None) -> SendResult | None:
    """Run ``work`` as a worker would (a cancellation hands its sends over, pending) and
    cancel it at its ``crash_at``-th event: ``None`` when it was cut off so."""
    seen = 0
    task: asyncio.Task[SendResult | None] | None = None

    def on_event(_: Event) -> None:
        nonlocal seen
        seen += 1
        if seen == crash_at and task is not None:
            task.cancel()

    async def body() -> SendResult | None:
        CANCEL_MEANS_RELEASE.set(True)
        return await work(on_event)

    task = asyncio.create_task(body())
    await asyncio.wait([task])
    return None if task.cancelled() else task.result()


async def check_tree(store: Store, plan: Plan, tree: SessionTree, path: Path = ()) -> None:
    """Every node of ``tree`` is the plan's: one child session per spawn call (id derived
    from the call), nothing else, each send done, usage rolled up from its children."""
    node = node_at(plan, path)
    assert tree.status == "done", (label(path), tree.status)
    messages = [decode_message(r.role, r.body) for r in await store.read_messages(tree.session_id)]
    calls = [c for m in messages if m.role == "assistant" for c in m.tool_calls
             if c.name == "spawn_agent"]
    assert len(calls) == len(node), (label(path), calls)
    wanted = [child_session_id(tree.session_id, 0, c.id) for c in calls]
    assert sorted(c.session_id for c in tree.children) == sorted(wanted), (label(path), wanted)
    by_id = {c.session_id: c for c in tree.children}
    children_total = Usage()
    for i, call in enumerate(calls):
        child = by_id[child_session_id(tree.session_id, 0, call.id)]
        assert child.link is not None
        assert (child.link.parent_id, child.link.parent_send, child.link.parent_call,
                child.link.name, child.link.depth) == (tree.session_id, 0, call.id, WORKER,
                                                      len(path) + 1)
        children_total = children_total + Usage.from_json(child.sends[0].usage)
        await check_tree(store, plan, child, (*path, i))
    (send,) = tree.sends
    stored_children = Usage.from_json(send.usage.get("children"))
    assert stored_children == children_total, (label(path), stored_children, children_total)
    own = Usage()
    for m in messages:
        if m.role == "assistant":
            own = own + Usage.from_json(m.meta.get("usage"))
    assert Usage.from_json(send.usage) == own + children_total
