"""``AgentSpec``: an agent the model can hand a task to."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError
from power_loop.llm.service import LLMService
from power_loop.loop.config import AgentLoopConfig
from power_loop.tools.registry import ToolRegistry
from power_loop.tools.sources import ToolSource
from power_loop.tools.tool import Tool

if TYPE_CHECKING:
    from power_loop.agents._team import AgentTeam
    from power_loop.loop.agent import StatefulAgentLoop
    from power_loop.loop.delegation import Delegate

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, eq=False)
class AgentSpec:
    """An agent the model can delegate to: ``StatefulAgentLoop(..., agents=[spec, ...])``.

    The model gets a ``spawn_agent`` tool (agent name and task). Each call runs the agent
    in a child session of its own (system prompt, tools, model), linked to the call that
    made it; the agent's final answer is the call's result.

    Args:
        name: How the model names it (letters, digits, ``_`` and ``-``; up to 64).
        description: What it is good at, for the model choosing an agent.
        system_prompt: The child session's system prompt.
        tools: Its tools (a :class:`ToolRegistry`, or tools, functions and MCP servers).
        llm: Its model (``None``: the model of the loop given the agents).
        max_rounds: Its rounds per task (``None``: its config's).
        config: Its loop config (``None``: a default one sharing the parent's tool,
            lease and output limits).
        agents: The agents it may delegate to in turn: ``None`` for the same ones as
            the loop it was given to, ``()`` for none.

    Example::

        researcher = AgentSpec("researcher", "Finds facts.", "Answer with facts only.",
                               tools=[search])
        loop = StatefulAgentLoop(llm=llm, dsn="app.db", agents=[researcher])
    """

    name: str
    description: str
    system_prompt: str | None = None
    tools: ToolRegistry | Iterable[Tool | ToolSource | Callable[..., Any]] = ()
    llm: LLMService | None = None
    max_rounds: int | None = None
    config: AgentLoopConfig | None = None
    agents: Sequence[AgentSpec] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidArgumentError(
                f"agent name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if not isinstance(self.description, str) or not self.description.strip():
            raise InvalidArgumentError(f"agent {self.name!r} needs a description (the "
                                       "model reads it to choose an agent)")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise InvalidArgumentError(f"agent {self.name!r}: system_prompt must be a string")
        if self.max_rounds is not None and (not isinstance(self.max_rounds, int)
                                            or self.max_rounds < 1):
            raise InvalidArgumentError(f"agent {self.name!r}: max_rounds must be at least 1")
        if self.config is not None and not isinstance(self.config, AgentLoopConfig):
            raise InvalidArgumentError(f"agent {self.name!r}: config must be an "
                                       "AgentLoopConfig")
        # Tools are checked now (bad functions, duplicate names), not at the first task.
        # Tool sources (MCP servers) are kept as they are: they list their tools when
        # the agent's loop first sends.
        given = self.tools
        checked = ToolRegistry([*given, *given.sources] if isinstance(given, ToolRegistry)
                               else given)
        object.__setattr__(self, "tools", (*checked, *checked.sources))
        if self.agents is not None:
            object.__setattr__(self, "agents", tuple(self.agents))
            for other in self.agents:
                if not isinstance(other, AgentSpec):
                    raise InvalidArgumentError(f"agent {self.name!r}: agents must be "
                                               f"AgentSpec objects, not {other!r:.60}")

    def delegation(self, team: Sequence[Delegate], host: StatefulAgentLoop) -> AgentTeam:
        """The ``spawn_agent`` tool and the agents' loops for ``team`` on ``host``
        (what :class:`~power_loop.StatefulAgentLoop` calls for ``agents=``)."""
        from power_loop.agents._team import AgentTeam

        return AgentTeam(team, host)
