"""Workflows: multi-agent plans as JSON, run durably over a journal.

``await loop.start_workflow(spec, input)`` runs a :class:`WorkflowSpec` whose leaves are
the loop's agents (``AgentSpec``), each in a child session. Every step is journaled by
its structural path; after a crash ``resume_workflow`` (or a worker) goes on from the
journal. See docs/workflows.md.
"""

from power_loop.loop.workflowing import install_workflow_engine
from power_loop.workflows._service import (
    Engine,
    InProcessLauncher,
    StepState,
    WorkerLauncher,
    WorkflowStatus,
    use_launcher,
)
from power_loop.workflows.schema import workflow_json_schema
from power_loop.workflows.spec import WorkflowSpec
from power_loop.workflows.subprocess_launcher import SubprocessLauncher
from power_loop.workflows.tool import workflow_tool

install_workflow_engine(Engine())

__all__ = [
    "InProcessLauncher",
    "StepState",
    "SubprocessLauncher",
    "WorkerLauncher",
    "WorkflowSpec",
    "WorkflowStatus",
    "use_launcher",
    "workflow_json_schema",
    "workflow_tool",
]
