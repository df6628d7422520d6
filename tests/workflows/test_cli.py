"""``power-loop workflows list|show|signal|cancel`` on every backend."""

from __future__ import annotations

import json

import pytest

from conformance.waiting import eventually
from power_loop import Store
from tests.cli_support import run_cli
from tests.workflows.support import LeafModel

pytestmark = pytest.mark.timeout(180)


async def test_an_operator_lists_shows_signals_and_cancels(store: Store, dsn: str,
                                                           table_prefix: str) -> None:
    where = ("--dsn", dsn, "--prefix", table_prefix)
    loop = LeafModel().loop(store)
    spec = {"sequence": [{"agent": "up", "input": "hi"}, {"wait": "go", "id": "w"},
                         {"agent": "echo", "input": "{{steps.w}}"}]}
    first = await loop.start_workflow(spec, None, "wf-signalled")
    second = await loop.start_workflow({"wait": "never"}, None, "wf-cancelled")

    async def waiting() -> bool:
        steps = (await loop.workflow_status(first)).steps
        return any(s.status == "waiting" for s in steps)
    await eventually(waiting, "the wait step")

    listed = await run_cli("workflows", "list", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    assert {w["workflow_id"]: w["status"] for w in json.loads(listed.stdout)} == {
        first: "running", second: "running"}
    shown = await run_cli("workflows", "show", first, *where)
    assert shown.returncode == 0, shown.stderr
    assert "/sequence/0" in shown.stdout and "waiting" in shown.stdout

    sent = await run_cli("workflows", "signal", first, "go", '{"ok": true}', *where)
    assert sent.returncode == 0, sent.stderr
    assert await loop.wait_workflow(first) == 'echo({"ok": true})'
    again = await run_cli("workflows", "signal", first, "go", "1", *where)
    assert again.returncode == 0 and "before" in again.stderr

    cancelled = await run_cli("workflows", "cancel", second, *where)
    assert cancelled.returncode == 0, cancelled.stderr
    assert (await loop.workflow_status(second)).status == "cancelled"
    missing = await run_cli("workflows", "show", "nope", *where)
    assert missing.returncode == 2 and "workflow_not_found" in missing.stderr + missing.stdout
    bad = await run_cli("workflows", "signal", first, "x", "{oops", *where)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
