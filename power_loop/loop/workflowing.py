"""The loop's workflow methods, and the seam to the workflows feature built on the loop.

``power_loop.workflows`` sits above the loop (its leaves are agent sessions run by
loops), so the loop cannot import it. It installs itself here, as the
:class:`WorkflowEngine` these methods call, when ``power_loop`` is imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from power_loop.errors import ConfigurationError

if TYPE_CHECKING:
    from power_loop.loop.agent import StatefulAgentLoop
    from power_loop.loop.delegation import Delegation


class WorkflowEngine(Protocol):
    """What ``power_loop.workflows`` provides to the loop."""

    async def start(self, loop: StatefulAgentLoop, spec: Any, value: Any,
                    workflow_id: str | None) -> str: ...

    async def wait(self, loop: StatefulAgentLoop, workflow_id: str) -> Any: ...

    async def status(self, loop: StatefulAgentLoop, workflow_id: str) -> Any: ...

    async def resume(self, loop: StatefulAgentLoop, workflow_id: str, spec: Any,
                     allow_spec_change: bool) -> Any: ...

    async def cancel(self, loop: StatefulAgentLoop, workflow_id: str) -> bool: ...

    async def claim_stranded(self, loop: StatefulAgentLoop, limit: int,
                             max_attempts: int) -> tuple[list[tuple[str, int]], list[str]]: ...

    async def run_claimed(self, loop: StatefulAgentLoop, workflow_id: str,
                          epoch: int) -> Any: ...

    async def signal(self, loop: StatefulAgentLoop, workflow_id: str, name: str,
                     payload: Any) -> bool: ...


_INSTALLED: list[WorkflowEngine] = []


def install_workflow_engine(engine: WorkflowEngine) -> None:
    """Called once by ``power_loop.workflows``."""
    _INSTALLED[:] = [engine]


def _engine() -> WorkflowEngine:
    if not _INSTALLED:
        raise ConfigurationError("workflows are not available: import power_loop (which "
                                 "loads power_loop.workflows) before using them")
    return _INSTALLED[0]


class WorkflowMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`. See docs/workflows.md."""

    async def start_workflow(self, spec: Mapping[str, Any] | str | Any, input: Any = None,
                             workflow_id: str | None = None) -> str:
        """Validate ``spec`` (a :class:`~power_loop.WorkflowSpec` or its JSON) and start
        it on ``input`` in the background; returns the workflow's id.

        Leaves name this loop's agents (``agents=[...]``). Starting an id that exists
        starts nothing and returns it.

        Raises:
            WorkflowSpecError: the spec is invalid (its ``pointer`` names the node).
        """
        return await _engine().start(self._me(), spec, input, workflow_id)

    async def wait_workflow(self, workflow_id: str) -> Any:
        """The workflow's output, once it has one.

        Raises:
            WorkflowFailedError: it failed or was cancelled.
        """
        return await _engine().wait(self._me(), workflow_id)

    async def workflow_status(self, workflow_id: str) -> Any:
        """A :class:`~power_loop.WorkflowStatus`: the workflow's state and every step's."""
        return await _engine().status(self._me(), workflow_id)

    async def resume_workflow(self, workflow_id: str, *, spec: Any = None,
                              allow_spec_change: bool = False) -> Any:
        """Run an interrupted workflow to its end here; returns its output.

        Finished steps are read from the journal, never run again; a leaf in flight is
        re-attached to its child session. ``spec``: the spec to go on with (``None``:
        the stored one); a different one is refused unless ``allow_spec_change``.

        Raises:
            WorkflowSpecChangedError: ``spec`` differs (``path`` names where).
            WorkflowBusyError: another executor holds it.
            WorkflowFailedError: it failed or was cancelled.
        """
        return await _engine().resume(self._me(), workflow_id, spec, allow_spec_change)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a running workflow (``False``: it had ended). Its executor stops at its
        next journal write."""
        return await _engine().cancel(self._me(), workflow_id)

    async def signal_workflow(self, workflow_id: str, name: str, payload: Any = None) -> bool:
        """Send the signal ``name`` a ``wait`` step waits for (before or while it waits).

        Returns ``False`` when a signal of that name was sent before (the first stays).
        """
        return await _engine().signal(self._me(), workflow_id, name, payload)

    async def claim_stranded_workflows(self, limit: int, max_attempts: int,
                                       ) -> tuple[list[tuple[str, int]], list[str]]:
        """For workers: lease up to ``limit`` workflows nobody runs (their executor died);
        those taken more than ``max_attempts`` times are parked instead. Returns the
        claims ``(workflow_id, epoch)`` and the parked ids."""
        return await _engine().claim_stranded(self._me(), limit, max_attempts)

    async def run_claimed_workflow(self, workflow_id: str, epoch: int) -> Any:
        """For workers: run a claimed workflow to its end; returns its output."""
        return await _engine().run_claimed(self._me(), workflow_id, epoch)

    async def _stop_workflows(self) -> None:
        """Cancel the workflows this loop runs in the background; each releases its lease."""
        tasks: dict[str, asyncio.Task[Any]] = getattr(self, "_workflow_tasks", {})
        running = list(tasks.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _agent_loop(self, agent: str) -> StatefulAgentLoop | None:
        """The loop running the agent ``agent`` (``None``: this loop has no such agent)."""
        delegation: Delegation | None = getattr(self, "_delegation", None)
        return None if delegation is None else delegation.loop_for(agent)

    def _me(self) -> StatefulAgentLoop:
        return self  # type: ignore[return-value]
