"""``run_workflow``: an opt-in tool through which the model writes and runs a workflow.

``loop.tools.register(workflow_tool(loop))``. The model passes a spec (JSON text, the
DSL of docs/workflows.md, whose leaves name the loop's agents) and an input. An invalid
spec comes back as a tool error naming the node and the fault, for the model to fix. A
valid one runs as a child workflow of the session: its id (and its session's) is
derived from the call, so a call run again after a crash finds the same workflow and
goes on with it instead of starting another. Its output is the tool's result.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from power_loop.errors import WorkflowBusyError, WorkflowFailedError, WorkflowSpecError
from power_loop.tools.context import ToolContext
from power_loop.tools.tool import Tool, ToolError, make_tool
from power_loop.workflows._service import checked_spec

if TYPE_CHECKING:
    from power_loop.loop.agent import StatefulAgentLoop

TOOL_NAME = "run_workflow"
_BUSY_PAUSE = 0.1


def workflow_tool(loop: StatefulAgentLoop, *, name: str = TOOL_NAME) -> Tool:
    """The ``run_workflow`` tool over ``loop``'s agents (register it on ``loop.tools``)."""

    async def run_workflow(spec: str, context: ToolContext, input: str = "null") -> str:
        """Run a workflow: a JSON plan of agent tasks, and return its output.

        Args:
            spec: The workflow as JSON: steps "agent" (with "input", a template),
                "sequence", "parallel", "foreach", "branch", "wait", "sleep".
            input: The workflow's input, as JSON (read as {{input...}} in templates).
        """
        try:
            value = json.loads(input)
        except ValueError as exc:
            raise ToolError(f"Error: input is not JSON ({exc}).") from None
        try:
            checked = checked_spec(loop, spec)
        except WorkflowSpecError as exc:  # before anything is written
            raise ToolError(f"Error: the workflow spec is invalid at "
                            f"{exc.pointer or '/'!r}: {exc.reason}. Fix it and call again."
                            ) from None
        store = await loop._get_store()
        slot = await store.make_child_session(context.session_id, context.send_index,
                                              context.call_id, name=name, kind="workflow")
        assert slot.link is not None  # no limits asked: never refused
        workflow_id = slot.link.session_id
        await loop.start_workflow(checked, value, workflow_id)
        try:
            output = await _finish(loop, workflow_id)
        except WorkflowFailedError as exc:
            raise ToolError(f"Error: {exc}") from None
        return output if isinstance(output, str) else json.dumps(output)

    agents = ", ".join(sorted(getattr(loop._delegation, "_known", {}))) or "none"
    description = ("Run a workflow: a JSON plan of tasks for agents (" + agents + "), in "
                   "sequence, in parallel, for each item of a list, or by condition; "
                   "returns its output.")
    return make_tool(run_workflow, name=name, description=description, safe_to_repeat=True,
                     timeout=math.inf)


async def _finish(loop: StatefulAgentLoop, workflow_id: str) -> Any:
    """Its output: waited for if this process runs it, else resumed here (a call run again
    after a crash), else waited for its holder."""
    if workflow_id in getattr(loop, "_workflow_tasks", {}):
        return await loop.wait_workflow(workflow_id)
    while True:
        try:
            return await loop.resume_workflow(workflow_id)
        except WorkflowBusyError:
            await asyncio.sleep(_BUSY_PAUSE)  # another executor holds it: look again
