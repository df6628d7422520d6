"""Two real processes approve the same call at once, 50 times: the tool runs 50 times.

The test process makes a send wait (its model calls a tool that needs approval), then
tells both approver processes, through their stdin, to approve that call, and reads
their answers. Exactly one wins each time; its tool run is appended to a file, so the
count is taken across processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from power_loop import ScriptedLLM, StatefulAgentLoop
from tests.approvals.approver import make_tool, model
from tests.durability.harness import REPO, StoreView, child_env

pytestmark = pytest.mark.slow

ROUNDS = 50


def _line(stream: IO[str] | None) -> dict[str, Any]:
    assert stream is not None
    text = stream.readline()
    assert text, "an approver died"
    found: dict[str, Any] = json.loads(text)
    return found


@pytest.fixture
def approvers(view: StoreView, tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    effects = tmp_path / "runs.jsonl"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.approvals.approver", view.dsn, view.prefix,
         str(effects)], cwd=REPO, env=child_env(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert _line(proc.stdout) == {"ready": True}
        yield procs
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_two_processes_approve_the_same_call(backend: str, view: StoreView, tmp_path: Path,
                                             approvers: list[subprocess.Popen[str]]) -> None:
    effects = tmp_path / "runs.jsonl"
    loop = StatefulAgentLoop(llm=ScriptedLLM(model), store=view.store,
                             tools=[make_tool(str(effects))])
    sid = view.new_session()
    winners: list[int] = []
    codes: set[str] = set()
    photo_finishes = 0
    for n in range(ROUNDS):
        waiting = view.run(loop.send(f"round {n}", sid))
        assert waiting.status == "waiting"
        (call,) = waiting.waiting
        command = json.dumps({"session_id": sid, "call_id": call.wait_id}) + "\n"
        for proc in approvers:
            assert proc.stdin is not None
            proc.stdin.write(command)
            proc.stdin.flush()
        answers = [_line(proc.stdout) for proc in approvers]
        won = [i for i, a in enumerate(answers) if a["won"]]
        assert len(won) == 1, answers
        assert answers[won[0]]["final_text"] == f"done: moved round {n}"
        codes.update(a["code"] for a in answers if not a["won"])
        photo_finishes += sum(1 for a in answers if a.get("same_moment"))
        winners.append(won[0])
    runs = [json.loads(line) for line in effects.read_text().splitlines()]
    assert len(runs) == ROUNDS
    assert sorted(r["send_index"] for r in runs) == list(range(ROUNDS))
    assert codes == {"wait_already_decided"}
    # How often both read the call as waiting and the conditional write decided (shown
    # with -s; it varies with the machine's load, so nothing is asserted on it).
    print(f"\n{backend}: {photo_finishes}/{ROUNDS} rounds decided by the conditional write; "
          f"winners by process: {winners.count(0)}/{winners.count(1)}")
    snap = view.snapshot(sid)
    snap.check_consistent()
    assert [s.status for s in snap.sends] == ["done"] * ROUNDS
