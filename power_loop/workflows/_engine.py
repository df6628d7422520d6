"""The engine: deterministic code walking a spec, with only its leaves calling a model.

A run reads the journal once, then walks the spec. A step whose row is ``done`` returns
its recorded output without running; any other step runs and records its outcome. Every
step is found by its structural path, so ``parallel`` branches finishing in another
order, or a ``foreach`` cut off at item k, replay the same way. Composite outputs
(sequence, parallel, foreach, branch) are not journaled: they are functions of their
children's rows.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from power_loop._faults import checkpoint
from power_loop.errors import PowerLoopError, WorkflowLeaseLostError
from power_loop.store.children import child_session_id
from power_loop.workflows._journal import Journal, StepRecord
from power_loop.workflows._values import holds, render, resolve

POLL_FIRST = 0.02
POLL_MAX = 0.5
ROOT_SEND = 0
"""The send index the leaves' session links name (a workflow's session makes no sends)."""


class LeafRunner(Protocol):
    """Runs one leaf's task in its child session and returns the answer."""

    async def __call__(self, agent: str, child_id: str, task: str) -> str: ...


class StepFailed(Exception):
    """A step failed; the workflow fails with this error (recorded as its ``error``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def step_key(path: str) -> str:
    """The journal key (and the leaf's ``parent_call``) of a step path, within ID limits."""
    if len(path) <= 160:
        return path or "/"
    return "h:" + hashlib.blake2b(path.encode(), digest_size=20).hexdigest()


def leaf_session_id(workflow_id: str, path: str) -> str:
    """The child session id of the leaf at ``path`` (derived: the same in every process)."""
    return child_session_id(workflow_id, ROOT_SEND, step_key(path))


class WorkflowRun:
    """One executor's pass over one workflow, holding its lease at ``epoch``."""

    def __init__(self, journal: Journal, workflow_id: str, root: dict[str, Any], value: Any,
                 epoch: int, ttl: float, leaf: LeafRunner,
                 make_child: Callable[[str, str], Awaitable[str]]) -> None:
        self.journal, self.workflow_id, self.root, self.input = journal, workflow_id, root, value
        self.epoch, self.ttl, self.leaf, self.make_child = epoch, ttl, leaf, make_child
        self.rows: dict[str, StepRecord] = {}

    async def run(self) -> Any:
        self.rows = await self.journal.steps(self.workflow_id)
        return await self.node(self.root, "", {"input": self.input, "steps": {}})

    async def node(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        kind = next(k for k in ("agent", "sequence", "parallel", "foreach", "branch", "wait",
                                "sleep") if k in node)
        output = await getattr(self, f"_{kind}")(node, path, scope)
        if "id" in node:
            scope["steps"][node["id"]] = output
        return output

    async def _sequence(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        output = None
        for i, child in enumerate(node["sequence"]):
            output = await self.node(child, f"{path}/sequence/{i}", scope)
        return output

    async def _bounded(self, jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
        gate = asyncio.Semaphore(limit)

        async def one(job: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await job()
        tasks = [asyncio.ensure_future(one(job)) for job in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _parallel(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        children = node["parallel"]
        jobs = [functools.partial(self.node, c, f"{path}/parallel/{i}", scope)
                for i, c in enumerate(children)]
        return await self._bounded(jobs, node.get("max_concurrency", len(children)))

    async def _foreach(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        items = resolve(node["foreach"], scope)
        if not isinstance(items, list):
            raise StepFailed(f"{path}/foreach", f"{node['foreach']!r} is not a list "
                             f"(it is {type(items).__name__})")

        def item_scope(k: int, item: Any) -> dict[str, Any]:
            return {**scope, "steps": dict(scope["steps"]), "item": item, "index": k}
        jobs = [functools.partial(self.node, node["do"], f"{path}/do@{k}", item_scope(k, item))
                for k, item in enumerate(items)]
        return await self._bounded(jobs, node.get("max_concurrency", 1))

    async def _branch(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        for i, arm in enumerate(node["branch"]):
            if holds(arm["if"], scope):
                return await self.node(arm["then"], f"{path}/branch/{i}/then", scope)
        if "else" in node:
            return await self.node(node["else"], f"{path}/else", scope)
        return None

    # -- steps with rows ----------------------------------------------------------------

    def _done(self, path: str) -> StepRecord | None:
        row = self.rows.get(step_key(path))
        return row if row is not None and row.status == "done" else None

    async def _begin(self, path: str, kind: str, status: str, child: str | None,
                     delay: float | None) -> StepRecord:
        checkpoint("workflow_before_step")
        row = await self.journal.begin_step(self.workflow_id, self.epoch, self.ttl,
                                            step_key(path), kind, status, child, delay)
        self.rows[row.path] = row
        return row

    async def _record(self, path: str, output: Any) -> Any:
        row = await self.journal.record(self.workflow_id, self.epoch, self.ttl,
                                        step_key(path), "done", output)
        self.rows[row.path] = row
        checkpoint("workflow_step_recorded")
        return row.output  # the first writer's, should another have recorded it

    async def _agent(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        done = self._done(path)
        if done is not None:
            return done.output
        agent = node["agent"]
        task = render(node.get("input", ""), scope)
        child_id = await self.make_child(agent, step_key(path))
        await self._begin(path, "agent", "running", child_id, None)
        try:
            answer = await self.leaf(agent, child_id, task)
        except WorkflowLeaseLostError:
            raise
        except PowerLoopError as exc:
            await self.journal.record(self.workflow_id, self.epoch, self.ttl, step_key(path),
                                      "failed", {"code": exc.code, "message": str(exc)})
            raise StepFailed(path, f"agent {agent!r} failed: {exc}") from exc
        checkpoint("workflow_leaf_answered")
        return await self._record(path, answer)

    async def _until(self, due: int | None, ready: Callable[[], Awaitable[bool]]) -> bool:
        """Poll until ``ready()`` (``True``) or the database clock passes ``due``."""
        pause = POLL_FIRST
        while True:
            if await ready():
                return True
            if due is not None and await self.journal.now() >= due:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def _wait(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        done = self._done(path)
        if done is not None:
            return done.output
        row = await self._begin(path, "wait", "waiting", None, node.get("timeout"))
        found: list[Any] = []

        async def signalled() -> bool:
            got, payload = await self.journal.signalled(self.workflow_id, node["wait"])
            if got:
                found.append(payload)
            return got
        got = await self._until(row.due_at, signalled)
        return await self._record(path, found[0] if got else None)

    async def _sleep(self, node: dict[str, Any], path: str, scope: dict[str, Any]) -> Any:
        done = self._done(path)
        if done is not None:
            return None
        row = await self._begin(path, "sleep", "sleeping", None, float(node["sleep"]))

        async def never() -> bool:
            return False
        await self._until(row.due_at, never)
        await self._record(path, None)
        return None
