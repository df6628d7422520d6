"""SIGKILL mid-send with every kind of hook, then a fresh process resumes with the same
hooks: which hooks run again, and the stored history equals a run that never crashed.

The send is the third of its session, so it folds first; its user text is changed by
``on_send_start``, its model calls by ``on_model_request`` (for the call only) and its
answers by ``on_model_response``, its tool call's arguments by ``on_tool_start`` and its
result by ``on_tool_end``, its fold's summary by ``on_fold_end`` (see
:class:`tests.hooks.policy.Policy`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.durability.harness import REPO, WAIT, StoreView, child_env
from tests.hooks.policy import Policy, read_log
from tests.hooks.support import FixedFold, fill, history_of, make_loop

pytestmark = pytest.mark.slow

TEXT = "use KEY secret"
FULL = ["on_send_start", "on_fold_start", "on_fold_end", "on_model_request",
        "on_model_response", "on_tool_start", "on_tool_end", "on_model_request",
        "on_model_response", "on_send_end"]
"""The hook points the send reaches, in order, when nothing goes wrong."""

CASES = {
    # crash point: (points the crashed process reached, points the resumer runs)
    "after_begin": (FULL[:1], FULL[1:]),
    "fold_answered": (FULL[:3], FULL[1:]),
    "after_model_answer": (FULL[:5], FULL[3:]),
    "after_tool_ran": (FULL[:6], FULL[5:]),
    "after_results_saved": (FULL[:7], FULL[7:]),
    "in_final_write": (FULL[:9], FULL[7:]),
}


def run_child(view: StoreView, tmp_path: Path, name: str, session_id: str, op: str,
              crash_at: str | None = None) -> subprocess.CompletedProcess[bytes]:
    args = {"dsn": view.dsn, "prefix": view.prefix, "session_id": session_id, "op": op,
            "text": TEXT, "log": str(tmp_path / f"{name}.jsonl"),
            "out": str(tmp_path / f"{name}.json")}
    return subprocess.run([sys.executable, "-m", "tests.hooks.hook_child", json.dumps(args)],
                          cwd=REPO, env=child_env(crash_at), capture_output=True,
                          timeout=WAIT, check=False)


def logged(tmp_path: Path, name: str) -> list[str]:
    return [line["point"] for line in read_log(str(tmp_path / f"{name}.jsonl"))]


@pytest.mark.parametrize("point", list(CASES))
def test_resume_after_sigkill_with_hooks(view: StoreView, tmp_path: Path, point: str) -> None:
    crashed_ran, resumer_runs = CASES[point]

    async def reference() -> tuple[str, str]:
        loop = make_loop(view.store, [Policy(str(tmp_path / "ref.jsonl"))], fold=FixedFold())
        ref = await loop.new_session()
        await fill(loop, ref)
        crash = await loop.new_session()
        await fill(make_loop(view.store, [Policy(str(tmp_path / "fill.jsonl"))],
                             fold=FixedFold()), crash)
        return ref, crash

    ref, sid = view.run(reference())
    ref_log = logged(tmp_path, "ref")
    prefill_points = len(ref_log)
    ref_final = view.run(make_loop(view.store, [Policy(str(tmp_path / "ref.jsonl"))],
                                   fold=FixedFold()).send(TEXT, session_id=ref)).final_text
    assert logged(tmp_path, "ref")[prefill_points:] == FULL
    assert ref_final == "done: value of key (seen)"

    crashed = run_child(view, tmp_path, "crashed", sid, "send", crash_at=point)
    assert crashed.returncode == -9, crashed.stderr.decode()[-3000:]
    assert logged(tmp_path, "crashed") == crashed_ran
    assert view.session(sid).pending_send == 2

    resumed = run_child(view, tmp_path, "resumer", sid, "resume")
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert json.loads((tmp_path / "resumer.json").read_text())["final_text"] == ref_final
    assert logged(tmp_path, "resumer") == resumer_runs

    assert view.run(history_of(view.store, sid)) == view.run(history_of(view.store, ref))
    fold, ref_fold = (view.run(view.store.latest_fold(s)) for s in (sid, ref))
    assert fold is not None and ref_fold is not None
    assert fold.summary == ref_fold.summary and fold.summary.endswith("(hooked)")
