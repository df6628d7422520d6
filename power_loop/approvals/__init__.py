"""Human-in-the-loop: tools that wait for a person's approval, and questions to the user.

A send whose tool call needs a decision stops with ``stop_reason="awaiting_approval"``
(or ``"awaiting_input"`` for ``ask_user``) and waits, durably: any process with the DSN
and the session id decides later with ``loop.approve``, ``loop.reject`` or
``loop.answer``, and the send goes on. See docs/human-in-the-loop.md.
"""

from power_loop.approvals.methods import ApprovalMethods
from power_loop.approvals.tools import ask_user_tool
from power_loop.store.waits import WaitRecord

__all__ = ["ApprovalMethods", "WaitRecord", "ask_user_tool"]
