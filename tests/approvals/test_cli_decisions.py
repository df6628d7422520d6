"""``power-loop sessions show`` shows what a send waits on; approve, reject and answer
decide it (recording only, or continuing the send with ``--app``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from power_loop import open_store
from tests.approvals.cli_app import make_loop
from tests.cli_support import run_cli

pytestmark = pytest.mark.timeout(120)
APP = "tests.approvals.cli_app:make_loop"


async def test_show_then_decide_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "app.db")
    async with await open_store(db) as store:
        loop = make_loop(store)
        sid = await loop.new_session(session_id="s1")
        waiting = await loop.send("clean up", sid)
    delete, ask = sorted(waiting.waiting, key=lambda w: w.kind)
    assert (delete.kind, ask.kind) == ("approval", "input")

    shown = await run_cli("sessions", "show", sid, "--dsn", db)
    assert shown.returncode == 0, shown.stderr
    assert "waiting (send #0" in shown.stdout
    assert delete.wait_id in shown.stdout and "delete_file" in shown.stdout
    assert "an answer" in shown.stdout
    as_json = json.loads((await run_cli("sessions", "show", sid, "--dsn", db,
                                        "--json")).stdout)
    assert [(w["call_id"], w["kind"]) for w in as_json["waiting"]] == [
        (w.wait_id, w.kind) for w in waiting.waiting]

    unknown = await run_cli("sessions", "approve", sid, "nope", "--dsn", db)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error [wait_not_found]")
    wrong = await run_cli("sessions", "approve", sid, ask.wait_id, "--dsn", db)
    assert wrong.returncode == 2 and "answer it" in wrong.stderr

    rejected = await run_cli("sessions", "reject", sid, delete.wait_id, "--reason",
                             "keep it", "--dsn", db)
    assert rejected.returncode == 0, rejected.stderr
    assert "still waits on" in rejected.stdout and ask.wait_id in rejected.stdout
    again = await run_cli("sessions", "reject", sid, delete.wait_id, "--dsn", db)
    assert again.returncode == 2 and again.stderr.startswith("error [wait_already_decided]")

    answered = await run_cli("sessions", "answer", sid, ask.wait_id, "-", "--app", APP,
                             "--dsn", db, "--json", stdin=b"Lisbon")
    assert answered.returncode == 0, answered.stderr
    outcome = json.loads(answered.stdout)
    assert outcome["status"] == "done" and outcome["waiting"] == []
    assert "keep it" in outcome["final_text"] and outcome["final_text"].endswith("Lisbon")
    shown = await run_cli("sessions", "show", sid, "--dsn", db)
    assert "waiting (" not in shown.stdout
