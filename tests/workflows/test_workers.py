"""Workers finish workflows whose executor died, and park those that keep dying."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from conformance.waiting import eventually
from power_loop import Store
from power_loop.workflows import use_launcher
from tests.workers.inproc import running, worker
from tests.workflows.support import LeafModel, run_reference
from tests.workflows.test_crash_properties import CrashingLauncher

SPEC: dict[str, Any] = {"sequence": [
    {"agent": "up", "input": "one"},
    {"foreach": "input", "do": {"agent": "echo", "input": "{{index}}:{{item}}"},
     "max_concurrency": 2}]}
INPUT = ["a", "b", "c"]


async def _stranded(store: Store, model: LeafModel, at: int) -> str:
    """A workflow whose executor 'died' before its ``at``-th leaf."""
    dying = model.loop(store, lease_ttl=0.2)
    use_launcher(dying, CrashingLauncher(at, after=False))
    workflow_id = await dying.start_workflow(SPEC, INPUT)
    task = dying._workflow_tasks.get(workflow_id)  # type: ignore[attr-defined]
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    return workflow_id


async def test_a_worker_finishes_a_stranded_workflow(store: Store) -> None:
    model = LeafModel()
    workflow_id = await _stranded(store, model, 2)
    loop = model.loop(store, lease_ttl=0.5)
    work = worker(store, loop)
    async with running(work):
        async def ended() -> bool:
            return (await loop.workflow_status(workflow_id)).status == "done"
        await eventually(ended, "the worker to finish the workflow")
    calls: Counter[tuple[str, str]] = Counter()
    assert await loop.wait_workflow(workflow_id) == run_reference(SPEC, INPUT, calls)
    assert model.calls == calls
    assert work.stats.workflows_resumed == 1


async def test_a_workflow_taken_too_often_is_parked(store: Store) -> None:
    model = LeafModel()
    workflow_id = await _stranded(store, model, 0)
    loop = model.loop(store, lease_ttl=0.1)

    async def claim() -> tuple[list[tuple[str, int]], list[str]]:
        while True:
            claims, parked = await loop.claim_stranded_workflows(5, max_attempts=1)
            if claims or parked:
                return claims, parked
            await asyncio.sleep(0.05)  # the last holder's lease has not expired yet
    claims, parked = await claim()
    assert [c[0] for c in claims] == [workflow_id] and parked == []
    claims, parked = await claim()  # the claim above lapsed unfinished: a second attempt
    assert claims == [] and parked == [workflow_id]
    status = await loop.workflow_status(workflow_id)
    assert status.parked and status.status == "running"
    assert await loop.claim_stranded_workflows(5, max_attempts=1) == ([], [])
