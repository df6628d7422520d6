"""Workflows on every backend: outputs, the journal's rows, status, signals, spec changes,
cancellation, and the lease's fencing of a zombie executor."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from conformance.waiting import eventually
from power_loop import (
    Store,
    WorkflowBusyError,
    WorkflowFailedError,
    WorkflowLeaseLostError,
    WorkflowNotFoundError,
    WorkflowSpecChangedError,
    WorkflowSpecError,
)
from power_loop.workflows._journal import Journal
from tests.workflows.support import LeafModel, run_reference

SPEC: dict[str, Any] = {"sequence": [
    {"agent": "up", "input": "hello {{input.name}}", "id": "greet"},
    {"parallel": [{"agent": "echo", "input": "a {{steps.greet}}"},
                  {"agent": "up", "input": "b"}], "id": "par"},
    {"foreach": "input.items", "max_concurrency": 2,
     "do": {"agent": "echo", "input": "item {{index}}={{item}}"}},
    {"branch": [{"if": {"eq": [{"ref": "input.name"}, "bob"]},
                 "then": {"agent": "up", "input": "is bob"}}],
     "else": {"agent": "up", "input": "not bob"}},
    {"wait": "go", "id": "sig"},
    {"sleep": 0},
    {"agent": "echo", "input": "{{steps.sig}} {{steps.par}}"}]}
INPUT = {"name": "bob", "items": [1, 2, 3]}


async def test_a_workflow_runs_to_the_reference_output(store: Store) -> None:
    model = LeafModel()
    loop = model.loop(store)
    workflow_id = await loop.start_workflow(SPEC, INPUT)
    assert await loop.signal_workflow(workflow_id, "go", {"ok": 1})
    assert not await loop.signal_workflow(workflow_id, "go", {"ok": 2})  # the first stays
    calls: Counter[tuple[str, str]] = Counter()
    assert await loop.wait_workflow(workflow_id) == run_reference(
        SPEC, INPUT, calls, {"go": {"ok": 1}})
    assert model.calls == calls
    status = await loop.workflow_status(workflow_id)
    assert status.status == "done"
    done = {s.path: s.status for s in status.steps}
    assert done["/sequence/2/do@2"] == "done"
    assert done["/sequence/3/branch/0/then"] == "done"
    assert done["/sequence/3/else"] == "pending"  # the arm not taken
    assert sum(1 for s in status.steps if s.status == "done") == 10
    # Resuming a finished workflow runs nothing and gives its output.
    assert await loop.resume_workflow(workflow_id) == await loop.wait_workflow(workflow_id)
    assert model.calls == calls


async def test_an_invalid_spec_starts_nothing(store: Store) -> None:
    loop = LeafModel().loop(store)
    with pytest.raises(WorkflowSpecError) as caught:
        await loop.start_workflow({"sequence": [{"agent": "nobody", "input": "x"}]}, None)
    assert caught.value.pointer == "/sequence/0/agent"
    assert await Journal(store).recent() == []


async def test_a_wait_times_out_with_null(store: Store) -> None:
    loop = LeafModel().loop(store)
    spec = {"sequence": [{"wait": "never", "timeout": 0.05, "id": "w"},
                         {"agent": "echo", "input": "got {{steps.w}}"}]}
    workflow_id = await loop.start_workflow(spec, None)
    assert await loop.wait_workflow(workflow_id) == "echo(got null)"


async def test_a_resume_under_a_changed_spec_is_refused_unless_allowed(store: Store) -> None:
    model = LeafModel()
    loop = model.loop(store)
    spec = {"sequence": [{"agent": "up", "input": "one"}, {"wait": "go"},
                         {"agent": "up", "input": "two"}]}
    workflow_id = await loop.start_workflow(spec, None)

    async def waiting() -> bool:
        steps = (await loop.workflow_status(workflow_id)).steps
        return any(s.kind == "wait" and s.status == "waiting" for s in steps)
    await eventually(waiting, "the wait step")
    await loop.cancel_workflow(workflow_id)
    with pytest.raises(WorkflowFailedError) as failed:
        await loop.wait_workflow(workflow_id)
    assert failed.value.status == "cancelled"
    changed = {"sequence": [{"agent": "up", "input": "one"}, {"wait": "go"},
                            {"agent": "up", "input": "TWO"}]}
    with pytest.raises(WorkflowSpecChangedError) as caught:
        await loop.resume_workflow(workflow_id, spec=changed)
    assert caught.value.path == "/sequence/2/input"
    with pytest.raises(WorkflowNotFoundError):
        await loop.workflow_status("no-such-workflow")


async def test_a_changed_spec_goes_on_when_allowed(store: Store) -> None:
    model = LeafModel()
    first = model.loop(store, lease_ttl=0.2)
    spec = {"sequence": [{"agent": "up", "input": "one"}, {"wait": "go"},
                         {"agent": "up", "input": "two"}]}
    workflow_id = await first.start_workflow(spec, None)

    async def waiting() -> bool:
        steps = (await first.workflow_status(workflow_id)).steps
        return any(s.kind == "wait" and s.status == "waiting" for s in steps)
    await eventually(waiting, "the wait step")
    # The executor stops (its process "ends"); its lease is released.
    task = first._workflow_tasks[workflow_id]  # type: ignore[attr-defined]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await first.signal_workflow(workflow_id, "go", None)
    changed = {"sequence": [{"agent": "up", "input": "one"}, {"wait": "go"},
                            {"agent": "up", "input": "three"}]}
    second = model.loop(store)
    assert await second.resume_workflow(workflow_id, spec=changed,
                                        allow_spec_change=True) == "THREE"
    assert model.calls[("up", "one")] == 1  # the finished step was not run again


async def test_a_zombie_executors_writes_are_rejected(store: Store) -> None:
    journal = Journal(store)
    await store.create_session("wf-z")
    assert await journal.create("wf-z", {"sleep": 0}, "h", None)
    old = await journal.acquire("wf-z", 0.05, count_attempt=False)
    with pytest.raises(WorkflowBusyError):
        await journal.acquire("wf-z", 30.0, count_attempt=True)

    async def taken() -> bool:
        try:
            return await journal.acquire("wf-z", 30.0, count_attempt=True) > old
        except WorkflowBusyError:
            return False
    await eventually(taken, "the lease to expire and be taken over")
    new = (await journal.load("wf-z")).lease_epoch
    with pytest.raises(WorkflowLeaseLostError):
        await journal.begin_step("wf-z", old, 30.0, "/a", "agent", "running", None, None)
    assert await journal.steps("wf-z") == {}
    await journal.begin_step("wf-z", new, 30.0, "/a", "agent", "running", None, None)
    with pytest.raises(WorkflowLeaseLostError):
        await journal.record("wf-z", old, 30.0, "/a", "done", "zombie")
    first = await journal.record("wf-z", new, 30.0, "/a", "done", "first")
    again = await journal.record("wf-z", new, 30.0, "/a", "done", "second")
    assert first.output == again.output == "first"  # recorded exactly once
    with pytest.raises(WorkflowLeaseLostError):
        await journal.finish("wf-z", old, "done", "zombie", None)
    await journal.finish("wf-z", new, "done", "ok", None)
    assert (await journal.load("wf-z")).output == "ok"
