"""Workflows under SIGKILL at every journal boundary, on every backend.

A process starts a workflow and dies at a crash point (or the test kills it while a
leaf's model is answering, or while the workflow waits for a signal or sleeps); a fresh
process resumes it. Afterwards the output is the crash-free run's, every leaf's model
was called as often as in the crash-free run (finished leaves never ran again), and each
step has exactly one row, done.

A model call the kill cuts off (a process killed after a leaf's model answered but before
its child session stored the answer, or while it was still answering) leaves nothing to
resume from, so that leaf's model is called once more; every leaf that finished, and every
leaf not reached, is called exactly as in the crash-free run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from power_loop.workflows._journal import Journal
from tests.durability.harness import WAIT, StoreView, child_env, wait_until
from tests.durability.workflow_child import WorkflowArgs
from tests.workflows.support import file_calls, run_reference

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {"sequence": [
    {"agent": "up", "input": "first {{input.name}}", "id": "first"},
    {"parallel": [{"agent": "echo", "input": "p0"}, {"agent": "echo", "input": "p1"},
                  {"agent": "echo", "input": "p2"}], "max_concurrency": 3, "id": "par"},
    {"foreach": "input.items", "do": {"agent": "up", "input": "item {{index}} {{item}}"}},
    {"agent": "echo", "input": "last {{steps.first}} {{steps.par}}"}]}
INPUT = {"name": "ada", "items": ["a", "b", "c", "d"]}
ROWS = 1 + 3 + 4 + 1
# Process A: p2 answers first, p0 last. Process B: the other way round.
FIRST_ORDER = {"p0": 0.6, "p1": 0.3}
SECOND_ORDER = {"p2": 0.6, "p1": 0.3}

# (crash point, the leaves whose model call the kill cut off: called once more)
POINTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("workflow_before_step:1", []),      # nothing of the workflow's steps written
    ("workflow_before_step:2", []),      # the first leaf done; the parallel not begun
    ("workflow_leaf_answered:1", []),    # the first leaf answered, outcome not recorded
    ("workflow_step_recorded:1", []),    # the first leaf's outcome recorded
    # One parallel branch recorded (p2, the fastest here; the slowest after the resume),
    # the other two still waiting for their model's answer.
    ("workflow_step_recorded:2", [("echo", "p0"), ("echo", "p1")]),
    ("workflow_step_recorded:6", []),    # foreach: items 0 and 1 of 4 recorded
    ("after_model_answer:1", [("up", "first ada")]),  # mid-leaf: answered, not stored
]


class Process:
    def __init__(self, args: WorkflowArgs, crash_at: str | None = None) -> None:
        self.args = args
        self.log = Path(args.out).with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.durability.workflow_child", args.to_json()],
                cwd=Path(__file__).resolve().parents[2], env=child_env(crash_at),
                stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> int:
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the process did not exit in time") from None

    def killed(self) -> None:
        code = self.wait()
        assert code == -signal.SIGKILL, f"exit {code}: {self.output()}"

    def report(self) -> dict[str, Any]:
        code = self.wait()
        assert code == 0, f"exit {code}: {self.output()}"
        report: dict[str, Any] = json.loads(Path(self.args.out).read_text())
        return report

    def output(self) -> str:
        out = Path(self.args.out)
        return (self.log.read_text(errors="replace")[-3000:]
                + (out.read_text() if out.exists() else ""))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes() -> Any:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def start(view: StoreView, tmp_path: Path, started: list[Process], name: str, op: str,
          spec: dict[str, Any], value: Any, *, crash_at: str | None = None,
          delays: dict[str, float] | None = None) -> Process:
    args = WorkflowArgs(dsn=view.dsn, prefix=view.prefix, workflow_id="wf-1", op=op,
                        spec=spec, input=value, calls=str(tmp_path / "calls.jsonl"),
                        out=str(tmp_path / f"{name}.json"), delays=delays or {})
    process = Process(args, crash_at)
    started.append(process)
    return process


def rows_of(view: StoreView) -> dict[str, Any]:
    rows: dict[str, Any] = view.run(Journal(view.store).steps("wf-1"))
    return rows


def check(view: StoreView, tmp_path: Path, output: Any, spec: dict[str, Any], value: Any,
          rows: int, signals: dict[str, Any] | None = None,
          again: list[tuple[str, str]] | None = None) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    assert output == run_reference(spec, value, calls, signals)
    calls.update(again or [])
    assert file_calls(str(tmp_path / "calls.jsonl")) == calls
    found = rows_of(view)
    assert len(found) == rows
    assert {row.status for row in found.values()} == {"done"}


@pytest.mark.parametrize(("point", "again"), POINTS)
def test_a_workflow_killed_at_a_boundary_resumes_to_the_same_output(
        view: StoreView, tmp_path: Path, processes: list[Process], point: str,
        again: list[tuple[str, str]]) -> None:
    start(view, tmp_path, processes, "a", "start", SPEC, INPUT, crash_at=point,
          delays=FIRST_ORDER).killed()
    report = start(view, tmp_path, processes, "b", "resume", SPEC, INPUT,
                   delays=SECOND_ORDER).report()
    check(view, tmp_path, report["output"], SPEC, INPUT, ROWS, again=again)


def _step_in(view: StoreView, status: str) -> bool:
    try:
        return any(row.status == status for row in rows_of(view).values())
    except Exception:  # the workflow's tables or row are not there yet
        return False


def test_a_workflow_killed_while_it_waits_resumes_with_the_signal(
        view: StoreView, tmp_path: Path, processes: list[Process]) -> None:
    spec = {"sequence": [{"agent": "up", "input": "before"}, {"wait": "go", "id": "w"},
                         {"agent": "echo", "input": "after {{steps.w}}"}]}
    first = start(view, tmp_path, processes, "a", "start", spec, None)
    wait_until(lambda: _step_in(view, "waiting"), "the wait step")
    first.proc.kill()
    first.killed()
    assert view.run(Journal(view.store).signal("wf-1", "go", {"x": 1}))
    report = start(view, tmp_path, processes, "b", "resume", spec, None).report()
    check(view, tmp_path, report["output"], spec, None, 2 + 1, {"go": {"x": 1}})


def test_a_workflow_killed_while_it_sleeps_sleeps_on(
        view: StoreView, tmp_path: Path, processes: list[Process]) -> None:
    spec = {"sequence": [{"agent": "up", "input": "before"}, {"sleep": 1.5},
                         {"agent": "echo", "input": "after"}]}
    first = start(view, tmp_path, processes, "a", "start", spec, None)
    wait_until(lambda: _step_in(view, "sleeping"), "the sleep step")
    first.proc.kill()
    first.killed()
    report = start(view, tmp_path, processes, "b", "resume", spec, None).report()
    check(view, tmp_path, report["output"], spec, None, 3)


def test_a_stopped_executor_past_its_lease_loses_the_workflow(
        view: StoreView, tmp_path: Path, processes: list[Process]) -> None:
    """SIGSTOP while a leaf's model answers; another process takes over once the lease
    lapsed and finishes; the stopped one, continued, writes nothing and says so."""
    spec = {"sequence": [{"agent": "up", "input": "one"}, {"agent": "echo", "input": "slow"},
                         {"agent": "up", "input": "three"}]}
    first = start(view, tmp_path, processes, "a", "start", spec, None, delays={"slow": 3.0})
    calls = tmp_path / "calls.jsonl"
    wait_until(lambda: ("echo", "slow") in file_calls(str(calls)), "the slow leaf's call")
    first.proc.send_signal(signal.SIGSTOP)
    try:
        second = start(view, tmp_path, processes, "b", "resume", spec, None).report()
        epoch = view.run(Journal(view.store).load("wf-1")).lease_epoch
        before = rows_of(view)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    late = first.report()
    assert late["executor"] == "WorkflowLeaseLostError"
    assert late["output"] == second["output"] == "THREE"
    assert rows_of(view) == before  # the zombie's late writes were all refused
    assert all(row.epoch <= epoch for row in before.values())
    assert rows_of(view)["/sequence/2"].epoch == epoch
    check(view, tmp_path, second["output"], spec, None, 3, again=[("echo", "slow")])
