"""What the loop's workflow methods do: leases, the executor's pass, waiting, status."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from power_loop.agents._child import attach
from power_loop.errors import (
    SessionExistsError,
    WorkflowBusyError,
    WorkflowFailedError,
    WorkflowLeaseLostError,
    WorkflowSpecChangedError,
    WorkflowSpecError,
)
from power_loop.store.records import check_id
from power_loop.workflows._engine import StepFailed, WorkflowRun, step_key
from power_loop.workflows._journal import Journal, StepRecord, WorkflowRecord
from power_loop.workflows.spec import WorkflowSpec, first_difference, iter_nodes

if TYPE_CHECKING:
    from power_loop.loop.agent import StatefulAgentLoop

POLL = 0.05


class WorkerLauncher(Protocol):
    """Runs a leaf: the task ``task`` in child session ``child_id`` of agent ``agent``,
    whose loop is ``loop``; returns the agent's answer. Wrap it to run leaves elsewhere."""

    async def run_leaf(self, loop: StatefulAgentLoop, agent: str, child_id: str,
                       task: str) -> str: ...


class InProcessLauncher:
    """The default launcher: the leaf runs in this process, on the agent's loop."""

    async def run_leaf(self, loop: StatefulAgentLoop, agent: str, child_id: str,
                       task: str) -> str:
        result = await attach(loop, child_id, task, None)
        return result.final_text or ""


@dataclass(frozen=True, slots=True)
class StepState:
    """One step as the journal has it (``status`` ``pending``: no row yet)."""

    path: str
    kind: str
    status: str
    output: Any
    child_session: str | None


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """A workflow and its steps, as stored.

    Attributes:
        status: ``running``, ``done``, ``failed`` or ``cancelled``.
        output: The output, once ``done``.
        error: Why it failed (``path``, ``message``).
        steps: Every journaled step (by path), and the spec's steps outside any
            ``foreach`` not reached yet (``pending``).
    """

    workflow_id: str
    status: str
    output: Any
    error: Any
    epoch: int
    attempts: int
    parked: bool
    steps: tuple[StepState, ...]


def _state(row: StepRecord) -> StepState:
    return StepState(row.path, row.kind, row.status, row.output, row.child_session)


class Engine:
    """The :class:`~power_loop.loop.workflowing.WorkflowEngine` the loop calls."""

    def __init__(self, launcher: WorkerLauncher | None = None) -> None:
        self.launcher: WorkerLauncher = launcher or InProcessLauncher()

    @staticmethod
    async def _journal(loop: StatefulAgentLoop) -> Journal:
        return Journal(await loop._get_store())

    @staticmethod
    def _tasks(loop: StatefulAgentLoop) -> dict[str, asyncio.Task[Any]]:
        tasks: dict[str, asyncio.Task[Any]] | None = getattr(loop, "_workflow_tasks", None)
        if tasks is None:
            tasks = {}
            loop._workflow_tasks = tasks  # type: ignore[attr-defined]
        return tasks

    def _spec(self, loop: StatefulAgentLoop, given: Any) -> WorkflowSpec:
        return checked_spec(loop, given)

    async def start(self, loop: StatefulAgentLoop, spec: Any, value: Any,
                    workflow_id: str | None) -> str:
        checked = self._spec(loop, spec)
        workflow_id = check_id(workflow_id or f"wf_{uuid.uuid4().hex}", "workflow_id")
        journal = await self._journal(loop)
        try:
            await journal.store.create_session(workflow_id, metadata={"workflow": True})
        except SessionExistsError:
            pass  # made by an earlier start that died before its workflow row
        if await journal.create(workflow_id, checked.root, checked.hash, value):
            self._spawn(loop, workflow_id, checked, count_attempt=False)
        return workflow_id

    def _spawn(self, loop: StatefulAgentLoop, workflow_id: str, spec: WorkflowSpec | None,
               *, count_attempt: bool) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(self.execute(loop, workflow_id, spec, count_attempt))
        tasks = self._tasks(loop)
        tasks[workflow_id] = task
        task.add_done_callback(lambda t: _forget(tasks, workflow_id, t))
        return task

    async def execute(self, loop: StatefulAgentLoop, workflow_id: str,
                      spec: WorkflowSpec | None, count_attempt: bool,
                      epoch: int | None = None) -> Any:
        """Take the lease (unless ``epoch``: taken already) and run the workflow to its
        end here (what resumes and workers do); returns its output."""
        journal = await self._journal(loop)
        ttl = loop.config.lease_ttl
        if epoch is None:
            epoch = await journal.acquire(workflow_id, ttl, count_attempt=count_attempt)
        record = await journal.load(workflow_id)
        root = record.spec if spec is None else spec.root
        if spec is not None and spec.hash != record.spec_hash:
            await journal.set_spec(workflow_id, epoch, ttl, spec.root, spec.hash)

        async def leaf(agent: str, child_id: str, task: str) -> str:
            agent_loop = loop._agent_loop(agent)
            if agent_loop is None:
                raise StepFailed(child_id, f"no agent {agent!r} on this loop")
            launcher: WorkerLauncher = getattr(loop, "_workflow_launcher", self.launcher)
            return await launcher.run_leaf(agent_loop, agent, child_id, task)

        async def make_child(agent: str, key: str) -> str:
            slot = await journal.store.make_child_session(workflow_id, 0, key, name=agent)
            assert slot.link is not None  # no limits asked: never refused
            return slot.link.session_id

        run = WorkflowRun(journal, workflow_id, root, record.input, epoch, ttl, leaf,
                          make_child)
        main = asyncio.current_task()
        assert main is not None
        lost: list[WorkflowLeaseLostError] = []

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    await journal.renew(workflow_id, epoch, ttl)
                except WorkflowLeaseLostError as exc:
                    lost.append(exc)
                    main.cancel()
                    return

        beat = asyncio.ensure_future(heartbeat())
        try:
            output = await run.run()
        except StepFailed as exc:
            error = {"path": exc.path, "message": exc.message}
            await journal.finish(workflow_id, epoch, "failed", None, error)
            raise WorkflowFailedError(f"workflow {workflow_id!r} failed at {exc.path!r}: "
                                      f"{exc.message}", workflow_id=workflow_id,
                                      status="failed") from exc
        except asyncio.CancelledError:
            if lost:
                raise lost[0] from None
            await asyncio.shield(journal.release(workflow_id, epoch))
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        await journal.finish(workflow_id, epoch, "done", output, None)
        return output

    async def wait(self, loop: StatefulAgentLoop, workflow_id: str) -> Any:
        task = self._tasks(loop).get(workflow_id)
        if task is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)
        journal = await self._journal(loop)
        while True:
            record = await journal.load(workflow_id)
            if record.status != "running":
                return _outcome(record)
            await asyncio.sleep(POLL)

    async def status(self, loop: StatefulAgentLoop, workflow_id: str) -> WorkflowStatus:
        journal = await self._journal(loop)
        record = await journal.load(workflow_id)
        rows = await journal.steps(workflow_id)
        states = {path: _state(row) for path, row in rows.items()}
        for ptr, node in iter_nodes(record.spec):
            kind = next((k for k in ("agent", "wait", "sleep") if k in node), None)
            key = step_key(ptr)
            if kind is not None and key not in states and "/do/" not in f"{ptr}/":
                states[key] = StepState(key, kind, "pending", None, None)
        return WorkflowStatus(record.workflow_id, record.status, record.output, record.error,
                              record.lease_epoch, record.attempts, record.parked,
                              tuple(sorted(states.values(), key=lambda s: s.path)))

    async def resume(self, loop: StatefulAgentLoop, workflow_id: str, spec: Any,
                     allow_spec_change: bool) -> Any:
        journal = await self._journal(loop)
        record = await journal.load(workflow_id)
        checked = None
        if spec is not None:
            checked = self._spec(loop, spec)
            where = first_difference(record.spec, checked.root)
            if where is not None and not allow_spec_change:
                raise WorkflowSpecChangedError(
                    f"workflow {workflow_id!r} started with another spec (first difference "
                    f"at {where or '/'!r}); resume without a spec, or pass "
                    "allow_spec_change=True to go on with the new one (finished steps keep "
                    "their outputs)", workflow_id=workflow_id, path=where)
        if record.status != "running":
            return _outcome(record)
        return await self.execute(loop, workflow_id, checked, True)

    async def claim_stranded(self, loop: StatefulAgentLoop, limit: int,
                             max_attempts: int) -> tuple[list[tuple[str, int]], list[str]]:
        """Take the lease of up to ``limit`` workflows nobody runs; park those taken more
        than ``max_attempts`` times. Returns the claims (id, epoch) and the parked ids."""
        journal = await self._journal(loop)
        ttl = loop.config.lease_ttl
        claims: list[tuple[str, int]] = []
        parked: list[str] = []
        for workflow_id in await journal.stranded(limit):
            try:
                epoch = await journal.acquire(workflow_id, ttl, count_attempt=True)
            except WorkflowBusyError:
                continue  # another worker was quicker
            if (await journal.load(workflow_id)).attempts > max_attempts:
                await journal.park(workflow_id)
                await journal.release(workflow_id, epoch)
                parked.append(workflow_id)
            else:
                claims.append((workflow_id, epoch))
        return claims, parked

    async def run_claimed(self, loop: StatefulAgentLoop, workflow_id: str, epoch: int) -> Any:
        """Run a workflow :meth:`claim_stranded` claimed."""
        return await self.execute(loop, workflow_id, None, True, epoch)

    async def cancel(self, loop: StatefulAgentLoop, workflow_id: str) -> bool:
        journal = await self._journal(loop)
        cancelled = await journal.cancel(workflow_id)
        task = self._tasks(loop).get(workflow_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return cancelled

    async def signal(self, loop: StatefulAgentLoop, workflow_id: str, name: str,
                     payload: Any) -> bool:
        journal = await self._journal(loop)
        return await journal.signal(workflow_id, name, payload)


def checked_spec(loop: StatefulAgentLoop, given: Any) -> WorkflowSpec:
    """``given`` validated, its leaves naming agents of ``loop``."""
    spec = given if isinstance(given, WorkflowSpec) else WorkflowSpec(given)
    for ptr, node in iter_nodes(spec.root):
        if "agent" in node and loop._agent_loop(node["agent"]) is None:
            raise WorkflowSpecError(f"{ptr}/agent", f"this loop has no agent "
                                    f"{node['agent']!r}: give it with "
                                    "StatefulAgentLoop(..., agents=[AgentSpec(...)])")
    return spec


def use_launcher(loop: StatefulAgentLoop, launcher: WorkerLauncher) -> None:
    """Run the leaves of ``loop``'s workflows through ``launcher`` (in a container, a
    sandbox, another process...) instead of in this process."""
    loop._workflow_launcher = launcher  # type: ignore[attr-defined]


def _forget(tasks: dict[str, asyncio.Task[Any]], workflow_id: str,
            task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the outcome is in the journal, read by wait
    if tasks.get(workflow_id) is task:
        del tasks[workflow_id]


def _outcome(record: WorkflowRecord) -> Any:
    if record.status == "done":
        return record.output
    raise WorkflowFailedError(
        f"workflow {record.workflow_id!r} is {record.status}"
        + (f": {record.error.get('message')} (at {record.error.get('path')!r})"
           if isinstance(record.error, dict) else ""),
        workflow_id=record.workflow_id, status=record.status)
