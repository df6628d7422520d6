"""The stateless loop: ``StatefulAgentLoop``, its config, and what a send returns."""

from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.config import AgentLoopConfig
from power_loop.loop.recovery import hand_over_on_cancel
from power_loop.loop.results import HistoryItem, SendResult

__all__ = ["AgentLoopConfig", "HistoryItem", "SendResult", "StatefulAgentLoop",
           "hand_over_on_cancel"]
