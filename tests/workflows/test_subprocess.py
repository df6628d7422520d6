"""The subprocess launcher: every leaf runs in an OS process of its own, on the store."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from power_loop import Store
from power_loop.workflows import SubprocessLauncher, use_launcher
from tests.workflows.support import LeafModel, file_calls, run_reference

REPO = str(Path(__file__).resolve().parents[2])
SPEC = {"sequence": [{"agent": "up", "input": "one", "id": "a"},
                     {"parallel": [{"agent": "echo", "input": "{{steps.a}}"},
                                   {"agent": "up", "input": "three"}]}]}


async def test_each_leaf_runs_in_its_own_process(store: Store, dsn: str, table_prefix: str,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("WF_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", REPO)
    loop = LeafModel().loop(store)
    use_launcher(loop, SubprocessLauncher("tests.workflows.support:make_loop", dsn,
                                          table_prefix=table_prefix))
    workflow_id = await loop.start_workflow(SPEC, None)
    expected: Counter[tuple[str, str]] = Counter()
    assert await loop.wait_workflow(workflow_id) == run_reference(SPEC, None, expected)
    assert file_calls(str(calls)) == expected
    pids = {json.loads(line)[2] for line in calls.read_text().splitlines()}
    assert len(pids) == 3 and os.getpid() not in pids
