"""Sub-agents under SIGKILL: a parent and its child killed together, or a child alone.

The process sends the root task: the root starts one agent, whose unsafe ``work`` tool
records its start and its effect in a file shared by every process. It dies at a crash
point inside the child's send (or the parent's, once the child answered), or the test
kills it while ``work`` runs. A fresh process then resumes the root. Afterwards:

* the root answered with the child's answer;
* there is exactly one child session for the call (its id derived from the call), done;
* ``work`` never started twice: a call cut off by the kill was answered "outcome unknown";
* usage rolled up: the root's send counts the child's, kept apart as well.

Then the child alone: killed while ``work`` (safe to repeat here) runs in a process that
resumes the child's session by itself; that child is resumed again and finishes, and
then the parent, resumed last, takes its stored answer and goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from power_loop.llm.messages import Usage, decode_message
from power_loop.loop.driver import UNKNOWN_OUTCOME
from power_loop.store.children import SessionTree, child_session_id
from tests.agents.support import Plan, check_tree, expected
from tests.durability.agent_child import AgentArgs
from tests.durability.harness import (
    WAIT,
    StoreView,
    child_env,
    read_effects,
    starts,
    wait_until,
)

pytestmark = pytest.mark.slow

PLAN: Plan = ((),)
SLOW = 60.0
"""How long ``work`` takes in a process the test kills while it runs."""

WORKED = "worked 0"

# (crash point, whether work had started when the process died, the result work's call
# has in the end: its own, or "outcome unknown" when it was cut off and is unsafe)
POINTS = [
    ("after_begin:2", False, WORKED),                  # the child's send is opened
    ("after_assistant_saved:2", False, UNKNOWN_OUTCOME),  # its call to work is stored
    ("during_tool", True, UNKNOWN_OUTCOME),            # killed by the test while work runs
    ("after_tool_ran:1", True, UNKNOWN_OUTCOME),       # work returned; result not stored
    ("after_results_saved:1", True, WORKED),           # work's result is stored
    ("in_final_write:1", True, WORKED),                # inside the child's final commit
    ("after_tool_ran:2", True, WORKED),                # the child answered; the parent's
                                                       # call result is not stored
    ("in_final_write:2", True, WORKED),                # inside the parent's final commit
]


class AgentProcess:
    """One ``python -m tests.durability.agent_child`` process."""

    def __init__(self, args: AgentArgs, crash_at: str | None = None) -> None:
        self.args = args
        self._log = Path(args.out).with_suffix(".log")
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.durability.agent_child", args.to_json()],
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
        return (self._log.read_text(errors="replace")[-3000:]
                + (out.read_text() if out.exists() else ""))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes() -> Any:
    started: list[AgentProcess] = []
    yield started
    for process in started:
        process.stop()


def start(view: StoreView, tmp_path: Path, started: list[AgentProcess], name: str,
          session_id: str, op: str, *, crash_at: str | None = None, **fields: Any,
          ) -> AgentProcess:
    args = AgentArgs(dsn=view.dsn, prefix=view.prefix, session_id=session_id, op=op,
                     plan=json.loads(json.dumps(PLAN)), effects=str(tmp_path / "effects.jsonl"),
                     out=str(tmp_path / f"{name}.json"), **fields)
    process = AgentProcess(args, crash_at)
    started.append(process)
    return process


def tree_of(view: StoreView, root: str) -> SessionTree:
    tree: SessionTree = view.run(view.store.session_tree(root))
    return tree


def the_child(view: StoreView, root: str) -> SessionTree:
    (child,) = tree_of(view, root).children
    assert child.link is not None
    assert child.session_id == child_session_id(root, 0, child.link.parent_call)
    return child


def results_of(view: StoreView, session_id: str) -> list[str]:
    return [r.content for m in view.snapshot(session_id).messages if m.role == "tool"
            for r in decode_message(m.role, m.body).tool_results]


def check_done(view: StoreView, root: str, report: dict[str, Any]) -> None:
    """The root answered with the child's answer; one child, done; usage rolled up."""
    assert report["result"]["final_text"] == expected(PLAN)
    tree = tree_of(view, root)
    view.run(check_tree(view.store, PLAN, tree))
    child = the_child(view, root)
    # The child send stores its model calls beside the token counts; compare the counts.
    assert report["result"]["children_usage"] == Usage.from_json(child.sends[0].usage).to_json()
    for node in tree.walk():
        view.snapshot(node.session_id).check_consistent()


@pytest.mark.parametrize(("point", "tool_started", "outcome"), POINTS,
                         ids=[p for p, _, _ in POINTS])
def test_kill_the_parent_while_its_child_runs(view: StoreView, tmp_path: Path,
                                              processes: list[AgentProcess], point: str,
                                              tool_started: bool, outcome: str) -> None:
    root = view.new_session()
    effects = tmp_path / "effects.jsonl"
    during = point == "during_tool"
    first = start(view, tmp_path, processes, "first", root, "send",
                  crash_at=None if during else point, tool_sleep=SLOW if during else 0.0)
    if during:
        wait_until(lambda: bool(starts(read_effects(effects))), "work to start")
        first.proc.send_signal(signal.SIGKILL)
    first.killed()
    ran_before = starts(read_effects(effects))
    assert len(ran_before) == int(tool_started)
    assert view.session(root).pending_send == 0

    report = start(view, tmp_path, processes, "resume", root, "resume").report()

    check_done(view, root, report)
    ran = starts(read_effects(effects))
    assert len(ran) <= 1, ran  # the unsafe tool never started twice
    if tool_started:
        assert ran == ran_before
    assert results_of(view, the_child(view, root).session_id) == [outcome]


@pytest.mark.parametrize("killed_again", [False, True], ids=["finishes", "killed_again"])
def test_kill_the_child_mid_tool_then_resume(view: StoreView, tmp_path: Path,
                                             processes: list[AgentProcess],
                                             killed_again: bool) -> None:
    root = view.new_session()
    effects = tmp_path / "effects.jsonl"
    first = start(view, tmp_path, processes, "first", root, "send", tool_sleep=SLOW,
                  safe=True)
    wait_until(lambda: len(starts(read_effects(effects))) == 1, "work to start")
    first.proc.send_signal(signal.SIGKILL)
    first.killed()
    child = the_child(view, root).session_id

    # A process resumes the child alone (as a worker would), through the root's loop.
    if killed_again:
        second = start(view, tmp_path, processes, "second", child, "resume",
                       tool_sleep=SLOW, safe=True)
        wait_until(lambda: len(starts(read_effects(effects))) == 2, "work to start again")
        second.proc.send_signal(signal.SIGKILL)
        second.killed()
        assert view.session(child).pending_send == 0
    else:
        resumed = start(view, tmp_path, processes, "second", child, "resume",
                        safe=True).report()
        assert resumed["result"]["final_text"] == "leaf 0"
        assert view.session(child).pending_send is None
        assert view.session(root).pending_send == 0  # the parent still waits

    report = start(view, tmp_path, processes, "last", root, "resume", safe=True).report()

    check_done(view, root, report)
    ran = starts(read_effects(effects))
    # Safe to repeat: re-run after each kill, never after the child's answer was stored.
    assert [r["attempt"] for r in ran] == ([1, 2, 2] if killed_again else [1, 2])
    assert {r["session_id"] for r in ran} == {child}
