"""``AgentTeam``: what ``agents=[...]`` becomes: the ``spawn_agent`` tool, and a loop per agent.

One tool for every agent (``spawn_agent(agent, task)``) rather than one tool per agent:
the tool list stays short and the same whatever the roster (its description lists the
agents, side by side, for the model to choose from), and an agent name the model gets
wrong comes back as an error naming the agents it may use.

The team belongs to the loop the agents were given to (the root). It builds one loop per
agent on the root's store, on first use, and gives each agent that may delegate in turn
its own ``spawn_agent`` (over its own roster, under the root's limits). The same team
answers a worker that resumes an agent's session: :meth:`AgentTeam.loop_for` names the
loop with that agent's model, tools and config.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from power_loop.agents._child import attach, forwarder
from power_loop.agents.spec import AgentSpec
from power_loop.context.active import active_run
from power_loop.errors import InvalidArgumentError, PowerLoopError, StructuredOutputError
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.config import AgentLoopConfig
from power_loop.loop.results import SendResult
from power_loop.tools.context import ToolContext
from power_loop.tools.registry import ToolRegistry
from power_loop.tools.tool import Tool, ToolError, make_tool

if TYPE_CHECKING:
    from power_loop.loop.delegation import Delegate

SPAWN_TOOL = "spawn_agent"
_NO_ANSWER = "(the agent finished without an answer)"


class _Gate:
    """The children of one send running at once (``max_parallel_agents``)."""

    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0


class AgentTeam:
    """The agents given to a loop, with everything they share (see the module docstring)."""

    def __init__(self, team: Sequence[Delegate], host: StatefulAgentLoop) -> None:
        self._host = host
        self._team = self._check_roster(team, "agents")
        self._known: dict[str, AgentSpec] = {}
        pending = list(self._team)
        while pending:  # every agent reachable from the team, by name
            spec = pending.pop()
            seen = self._known.get(spec.name)
            if seen is None:
                self._known[spec.name] = spec
                pending.extend(spec.agents or ())
            elif seen is not spec:
                raise InvalidArgumentError(
                    f"two different agents are named {spec.name!r}; agent names must be "
                    "unique across a team and the agents they delegate to")
        self._loops: dict[str, StatefulAgentLoop] = {}
        self._gates: dict[tuple[str, int], _Gate] = {}

    @staticmethod
    def _check_roster(team: Sequence[object], what: str) -> tuple[AgentSpec, ...]:
        roster: list[AgentSpec] = []
        for spec in team:
            if not isinstance(spec, AgentSpec):
                raise InvalidArgumentError(f"{what} must be AgentSpec objects, not "
                                           f"{spec!r:.60}")
            if any(spec.name == other.name for other in roster):
                raise InvalidArgumentError(f"{what} name {spec.name!r} twice")
            roster.append(spec)
        return tuple(roster)

    # -- the Delegation protocol ---------------------------------------------------------

    def tools(self) -> Sequence[Tool]:
        return [self._spawn_tool(self._team)]

    def loop_for(self, agent: str) -> StatefulAgentLoop | None:
        """The loop running ``agent``'s sessions (``None``: no agent of that name)."""
        spec = self._known.get(agent)
        if spec is None:
            return None
        store = self._host.store
        loop = self._loops.get(agent)
        if loop is None or loop.store is not store:
            loop = StatefulAgentLoop(llm=spec.llm or self._host.llm, store=store,
                                     config=self._config_for(spec),
                                     tools=ToolRegistry(spec.tools))
            roster = self._team if spec.agents is None else spec.agents
            if roster:
                loop.tools.register(self._spawn_tool(roster))
            self._loops[agent] = loop
        return loop

    def _config_for(self, spec: AgentSpec) -> AgentLoopConfig:
        config = spec.config
        if config is None:
            host = self._host.config
            # The parent's limits on tools, leases and output; nothing of its context
            # setup (notes, folds, timers, memory). An agent's task is one send, so no
            # window is worth caching for a next one.
            config = AgentLoopConfig(
                max_output_tokens=host.max_output_tokens, tool_timeout=host.tool_timeout,
                max_tool_output_chars=host.max_tool_output_chars,
                max_parallel_tools=host.max_parallel_tools, lease_ttl=host.lease_ttl,
                lease_wait=None, cache_sessions=0)
        if spec.max_rounds is not None:
            config = replace(config, max_rounds=spec.max_rounds)
        return config

    # -- spawn_agent ---------------------------------------------------------------------

    def _spawn_tool(self, roster: Sequence[AgentSpec]) -> Tool:
        by_name = {spec.name: spec for spec in roster}

        async def spawn_agent(agent: str, task: str, context: ToolContext) -> str:
            """Hand a task to another agent and wait for its answer.

            Args:
                agent: The agent's name.
                task: Everything the agent needs to know to do the task: it does not see
                    this conversation.
            """
            return await self._spawn(by_name, agent, task, context)

        listing = "\n".join(f"- {spec.name}: {spec.description.strip()}" for spec in roster)
        description = (
            "Hand a task to another agent and wait for its answer. The agent does not see "
            "this conversation: put everything it needs in the task. Several calls in one "
            f"answer run at once.\n\nAgents:\n{listing}")
        # No timeout: the child's own limits (rounds, tokens, its tools' timeouts) bound
        # it, and a call abandoned half-way would leave its work to nobody.
        return make_tool(spawn_agent, name=SPAWN_TOOL, description=description,
                         safe_to_repeat=True, timeout=math.inf)

    async def _spawn(self, roster: Mapping[str, AgentSpec], agent: str, task: str,
                     context: ToolContext) -> str:
        run = active_run(SPAWN_TOOL)
        spec = roster.get(agent)
        if spec is None:
            raise ToolError(f"Error: there is no agent named {agent!r}. Agents you can use: "
                            f"{', '.join(roster) or 'none'}.")
        if not task.strip():
            raise ToolError("Error: the task is empty. Say what the agent should do, with "
                            "everything it needs to know.")
        config = self._host.config
        slot = await run.store.make_child_session(
            context.session_id, context.send_index, context.call_id, name=spec.name,
            system_prompt=spec.system_prompt, max_depth=config.max_agent_depth,
            max_children=config.max_agents_per_send)
        if slot.refused == "depth":
            raise ToolError(
                f"Error: agents may be nested {config.max_agent_depth} deep and this agent "
                "would be deeper. Do the task yourself.")
        if slot.refused == "children":
            raise ToolError(
                f"Error: this request already started {slot.siblings} agents, the most it "
                "may. Do the rest yourself, or answer with what you have.")
        assert slot.link is not None
        link = slot.link
        loop = self.loop_for(link.name)  # the agent the call made, even if renamed since
        if loop is None:
            raise ToolError(f"Error: agent {link.name!r} is no longer available.")
        async with self._gate(context.session_id, context.send_index):
            try:
                result = await attach(loop, link.session_id, task,
                                      forwarder(run.emit, link))
            except StructuredOutputError as exc:
                result = exc.result
            except PowerLoopError as exc:
                raise ToolError(
                    f"Error: agent {link.name!r} failed: {type(exc).__name__}: {exc}. Its "
                    f"unfinished task stays in session {link.session_id!r}.") from exc
        run.result_meta[context.call_id] = {"child_session": link.session_id,
                                            "child_usage": result.usage.to_json()}
        return _answer(result)

    @contextlib.asynccontextmanager
    async def _gate(self, session_id: str, send_index: int) -> AsyncIterator[None]:
        key = (session_id, send_index)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(self._host.config.max_parallel_agents)
        gate.users += 1
        try:
            async with gate.semaphore:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]


def _answer(result: SendResult) -> str:
    """The child's answer as its parent's tool result."""
    text = result.final_text or _NO_ANSWER
    if result.status != "done":
        return f"[the agent's task was {result.status}; its answer so far:]\n{text}"
    return text
