"""Random workflows (depth up to 4) crashed at a random leaf, then resumed: the output is
the in-memory reference's, every leaf's model was called exactly as often as in a run
without a crash, and each step has one row."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import StatefulAgentLoop, WorkflowBusyError, open_store
from power_loop.workflows import use_launcher
from power_loop.workflows._journal import Journal
from power_loop.workflows._service import InProcessLauncher
from tests.workflows.support import LeafModel, run_reference


class Crash(BaseException):
    """The process 'dies' here: nothing below catches it, nothing is released."""


class CrashingLauncher:
    """Runs leaves until the ``at``-th (before it runs, or after it ran and before its
    outcome is recorded), then lets what is in flight finish and 'dies'."""

    def __init__(self, at: int, after: bool) -> None:
        self.at, self.after = at, after
        self.started = 0
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.crashed = False
        self.inner = InProcessLauncher()

    async def _die(self) -> None:
        self.crashed = True
        await self.idle.wait()
        raise Crash

    async def run_leaf(self, loop: StatefulAgentLoop, agent: str, child_id: str,
                       task: str) -> str:
        if self.crashed:
            raise Crash
        k = self.started
        self.started += 1
        if k == self.at and not self.after:
            await self._die()
        self.in_flight += 1
        self.idle.clear()
        try:
            answer = await self.inner.run_leaf(loop, agent, child_id, task)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        if k == self.at:
            await self._die()
        return answer


@st.composite
def specs(draw: st.DrawFn, depth: int = 4) -> dict[str, Any]:
    names = itertools.count()

    def node(level: int, inside: bool = False) -> dict[str, Any]:
        kinds = ["agent", "sleep"] + (["sequence", "parallel", "foreach", "branch"]
                                      if level < depth else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "agent":
            return {"agent": draw(st.sampled_from(["up", "echo"])),
                    "input": f"t{next(names)}" + (" {{index}}/{{item}}" if inside else "")}
        if kind == "sleep":
            return {"sleep": 0}
        if kind == "foreach":
            return {"foreach": "input.items", "do": node(level + 1, True),
                    "max_concurrency": draw(st.integers(1, 3))}
        if kind == "branch":
            return {"branch": [{"if": {"gt": [{"ref": "input.n"}, draw(st.integers(0, 3))]},
                                "then": node(level + 1, inside)}],
                    "else": node(level + 1, inside)}
        children = [node(level + 1, inside) for _ in range(draw(st.integers(1, 3)))]
        if kind == "parallel":
            return {"parallel": children, "max_concurrency": draw(st.integers(1, 3))}
        return {"sequence": children}
    return node(1)


async def _crash_and_resume(db: str, spec: dict[str, Any], value: Any, at: int,
                            after: bool) -> tuple[Any, Counter[tuple[str, str]], int, bool]:
    model = LeafModel()
    async with await open_store(db) as store:
        first = model.loop(store, lease_ttl=0.2)
        crashing = CrashingLauncher(at, after)
        use_launcher(first, crashing)
        workflow_id = await first.start_workflow(spec, value)
        task = first._workflow_tasks.get(workflow_id)  # type: ignore[attr-defined]
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        second = model.loop(store)
        while True:
            try:
                output = await second.resume_workflow(workflow_id)
                break
            except WorkflowBusyError:  # the dead executor's lease has not expired yet
                await asyncio.sleep(0.05)
        rows = await Journal(store).steps(workflow_id)
        return output, model.calls, len(rows), crashing.crashed


@settings(max_examples=40, deadline=None)
@given(specs(), st.lists(st.integers(0, 9), max_size=3), st.integers(0, 4),
       st.integers(0, 12), st.booleans())
def test_a_crash_anywhere_resumes_to_the_reference(tmp_path_factory: Any,
                                                   spec: dict[str, Any], items: list[int],
                                                   n: int, at: int, after: bool) -> None:
    value = {"items": items, "n": n}
    calls: Counter[tuple[str, str]] = Counter()
    expected = run_reference(spec, value, calls)
    db = str(Path(tmp_path_factory.mktemp("wf")) / "wf.db")
    output, seen, rows, crashed = asyncio.run(_crash_and_resume(db, spec, value, at, after))
    assert crashed == (at < sum(calls.values()))
    assert output == expected
    assert seen == calls  # no finished leaf ran twice, none was skipped
    assert rows == sum(calls.values()) + _sleeps(spec, value)


def _sleeps(spec: dict[str, Any], value: Any) -> int:
    """Sleep steps the run reaches (each has a row, as each leaf does)."""
    count = 0

    def walk(node: dict[str, Any], scope: dict[str, Any]) -> None:
        nonlocal count
        if "sleep" in node:
            count += 1
        for key in ("sequence", "parallel"):
            for child in node.get(key, ()):
                walk(child, scope)
        if "foreach" in node:
            for _ in scope["input"]["items"]:
                walk(node["do"], scope)
        if "branch" in node:
            arm = node["branch"][0]
            walk(arm["then"] if scope["input"]["n"] > arm["if"]["gt"][1] else node["else"],
                 scope)
    walk(spec, {"input": value})
    return count
