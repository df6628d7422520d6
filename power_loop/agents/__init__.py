"""Sub-agents: agents the model hands tasks to, each in a child session of its own.

``StatefulAgentLoop(..., agents=[AgentSpec(...), ...])`` gives the model a
``spawn_agent`` tool. See docs/agents.md.
"""

from power_loop.agents.spec import AgentSpec
from power_loop.store.children import SessionLink, SessionTree, child_session_id

__all__ = ["AgentSpec", "SessionLink", "SessionTree", "child_session_id"]
