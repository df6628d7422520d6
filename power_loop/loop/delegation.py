"""The seam between the loop and the sub-agents feature built on it.

``power_loop.agents`` sits above the loop: it builds on ``StatefulAgentLoop``, so the loop
cannot import it. The loop knows only these two protocols. ``agents=[...]`` takes
:class:`Delegate` objects (``AgentSpec`` is one); the first of them turns the whole team
into a :class:`Delegation`, which gives the loop its tools (``spawn_agent``) and tells it
which loop runs the sends of an agent's child session (a worker resuming a stranded
child runs the child agent's tools and model, not the application's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from power_loop.store.children import SessionTree
from power_loop.tools.tool import Tool

if TYPE_CHECKING:
    from power_loop.loop.agent import StatefulAgentLoop
    from power_loop.store.store import Store


class Delegation(Protocol):
    """What a loop's ``agents=`` becomes."""

    def tools(self) -> Sequence[Tool]:
        """The tools that hand work to the agents."""
        ...

    def loop_for(self, agent: str) -> StatefulAgentLoop | None:
        """The loop that runs the sessions of the agent named ``agent``."""
        ...


class Delegate(Protocol):
    """An agent a loop's model can hand work to (:class:`~power_loop.AgentSpec`)."""

    @property
    def name(self) -> str: ...

    def delegation(self, team: Sequence[Delegate], host: StatefulAgentLoop) -> Delegation:
        """The :class:`Delegation` of ``team`` (which includes this one) on ``host``."""
        ...


class DelegationMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`."""

    _get_store: Callable[[], Awaitable[Store]]
    _delegation: Delegation | None

    async def session_tree(self, session_id: str) -> SessionTree:
        """The session and every sub-agent session below it, as stored.

        Each node has the session, its link to its parent (agent name, the parent's
        send and tool call, depth), its sends (status, usage) and its children.
        """
        store = await self._get_store()
        return await store.session_tree(session_id)

    async def _runner_for(self, store: Store, session_id: str) -> StatefulAgentLoop | None:
        """The loop of the agent whose child session this is (``None``: this loop's)."""
        if self._delegation is None:
            return None
        link = await store.get_session_link(session_id)
        if link is None or link.kind != "agent":
            return None
        runner = self._delegation.loop_for(link.name)
        return None if runner is self else runner
