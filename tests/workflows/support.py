"""A model for workflow tests: each leaf answers ``<agent>(<task>)`` in one model call.

The answer depends only on the request, so a process resuming after a crash answers as
the dead one would have, and :func:`reference` computes a workflow's output in memory.
Every model call is counted per task (in memory, and in a JSON Lines file shared by
processes when ``calls`` is set).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from power_loop import (
    AgentLoopConfig,
    AgentSpec,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    reply,
)
from power_loop.workflows._values import holds, render, resolve

AGENTS = ("up", "echo")


def answer(agent: str, task: str) -> str:
    return task.upper() if agent == "up" else f"echo({task})"


@dataclass
class LeafModel:
    """The leaves' model, one per agent, and the count of calls per (agent, task)."""

    calls_file: str | None = None
    gate: asyncio.Event | None = None
    delays: dict[str, float] = field(default_factory=dict)
    """Seconds the model takes to answer a task (by task)."""
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)

    def model(self, agent: str) -> ScriptedLLM:
        async def script(request: LLMRequest) -> Turn:
            task = request.messages[0].text
            self.calls[(agent, task)] += 1
            if self.calls_file is not None:
                _append(self.calls_file, json.dumps([agent, task, os.getpid()]))
            if self.gate is not None:
                await self.gate.wait()
            if task in self.delays:
                await asyncio.sleep(self.delays[task])
            return reply(answer(agent, task))
        return ScriptedLLM(script)

    def agents(self, lease_ttl: float = 30.0) -> list[AgentSpec]:
        config = AgentLoopConfig(lease_ttl=lease_ttl, lease_wait=None, cache_sessions=0)
        return [AgentSpec(name, f"the {name} agent", llm=self.model(name), config=config)
                for name in AGENTS]

    def loop(self, store: Store, *, lease_ttl: float = 30.0,
             llm: ScriptedLLM | None = None) -> StatefulAgentLoop:
        config = AgentLoopConfig(lease_ttl=lease_ttl, lease_wait=None)
        return StatefulAgentLoop(llm=llm or ScriptedLLM([]), store=store, config=config,
                                 agents=self.agents(lease_ttl))


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def make_loop(store: Store) -> StatefulAgentLoop:
    """The app factory of the subprocess launcher's tests (``$WF_CALLS``: the calls file)."""
    return LeafModel(calls_file=os.environ.get("WF_CALLS")).loop(store)


def file_calls(path: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            agent, task, _pid = json.loads(line)
            counts[(agent, task)] += 1
    return counts


def reference(node: dict[str, Any], scope: dict[str, Any],
              calls: Counter[tuple[str, str]] | None = None,
              signals: dict[str, Any] | None = None) -> Any:
    """The output of a workflow, computed in memory (no store, no engine)."""
    if "agent" in node:
        task = render(node.get("input", ""), scope)
        if calls is not None:
            calls[(node["agent"], task)] += 1
        output: Any = answer(node["agent"], task)
    elif "sequence" in node:
        output = None
        for child in node["sequence"]:
            output = reference(child, scope, calls, signals)
    elif "parallel" in node:
        output = [reference(child, scope, calls, signals) for child in node["parallel"]]
    elif "foreach" in node:
        items = resolve(node["foreach"], scope)
        output = [reference(node["do"], {**scope, "steps": dict(scope["steps"]), "item": item,
                                         "index": k}, calls, signals)
                  for k, item in enumerate(items)]
    elif "branch" in node:
        output = None
        for arm in node["branch"]:
            if holds(arm["if"], scope):
                output = reference(arm["then"], scope, calls, signals)
                break
        else:
            if "else" in node:
                output = reference(node["else"], scope, calls, signals)
    elif "wait" in node:
        output = (signals or {}).get(node["wait"])
    else:
        output = None
    if "id" in node:
        scope["steps"][node["id"]] = output
    return output


def run_reference(spec: dict[str, Any], value: Any,
                  calls: Counter[tuple[str, str]] | None = None,
                  signals: dict[str, Any] | None = None) -> Any:
    return reference(spec, {"input": value, "steps": {}}, calls, signals)
