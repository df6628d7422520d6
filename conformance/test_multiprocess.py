"""Real OS processes writing to one database at once, on every backend.

Four worker processes (``conformance/_append_worker.py``) open their own stores, line up
at a start barrier and append concurrently, one ``append_messages`` call per message.
Afterwards every session's seqs must be contiguous from 0 and unique, every append a
worker was told succeeded must be stored at the seq it was given, in the worker's own
order, and nothing may be lost or duplicated. On SQLite the four processes share one
file and the busy timeout serializes their writes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conformance._append_worker import StartBarrier
from power_loop import MessageRecord, Store

WORKERS = 4
REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 240.0


async def _run_workers(store: Store, dsn: str, tmp_path: Path, mode: str, sessions: list[str],
                       count: int) -> list[dict[str, Any]]:
    """Start the workers, open the barrier once all have arrived, return their reports."""
    gate = tmp_path / "barrier"
    gate.mkdir()
    barrier = StartBarrier(gate)
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conformance._append_worker", cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE) for _ in range(WORKERS)]
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            outputs = [asyncio.ensure_future(p.communicate(json.dumps({
                "dsn": dsn, "table_prefix": store.table_prefix, "worker": w, "mode": mode,
                "sessions": sessions, "count": count, "barrier": str(gate)}).encode()))
                for w, p in enumerate(procs)]
            while await asyncio.to_thread(barrier.arrived) < WORKERS:
                if any(o.done() for o in outputs):
                    break  # a worker died before arriving; its report says why
                await asyncio.sleep(0.01)
            await asyncio.to_thread(barrier.open)
            results = await asyncio.gather(*outputs)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    reports = []
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, f"worker failed ({p.returncode}):\n{err.decode()}"
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


async def _read_contiguous(store: Store, session_id: str) -> list[MessageRecord]:
    messages = await store.read_messages(session_id)
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert await store.next_seq(session_id) == len(messages)
    return messages


@pytest.mark.slow
@pytest.mark.parametrize("session_count", [1, 10], ids=["one-session", "ten-sessions"])
async def test_concurrent_appends_stay_contiguous(store: Store, dsn: str, tmp_path: Path,
                                                  session_count: int) -> None:
    per_worker = 100
    sessions = [f"multi process ✓ {k}" for k in range(session_count)]
    for sid in sessions:
        await store.create_session(sid)

    reports = await _run_workers(store, dsn, tmp_path, "plain", sessions, per_worker)

    stored: dict[tuple[int, int], tuple[int, int]] = {}  # (worker, i) -> (session, seq)
    for k, sid in enumerate(sessions):
        messages = await _read_contiguous(store, sid)
        assert len(messages) == WORKERS * per_worker // session_count
        for m in messages:
            key = (m.body["w"], m.body["i"])
            assert key not in stored, f"{key} stored twice"
            stored[key] = (k, m.seq)
    assert len(stored) == WORKERS * per_worker
    for report in reports:
        w = report["worker"]
        # Each append landed where the store said it did: the seq it returned.
        assert [stored[(w, i)] for i, _, _ in report["written"]] == [
            (k, seq) for _, k, seq in report["written"]]
        # In each session, a worker's messages keep the order it appended them in.
        per_session: dict[int, list[int]] = defaultdict(list)
        for i in range(per_worker):
            per_session[stored[(w, i)][0]].append(stored[(w, i)][1])
        assert all(seqs == sorted(seqs) for seqs in per_session.values())


@pytest.mark.slow
async def test_fenced_appends_under_lease_handoffs(store: Store, dsn: str,
                                                   tmp_path: Path) -> None:
    per_worker = 50
    sid = "fenced ✓"
    await store.create_session(sid)

    reports = await _run_workers(store, dsn, tmp_path, "fenced", [sid], per_worker)

    messages = await _read_contiguous(store, sid)
    assert len(messages) == WORKERS * per_worker
    assert not [m for m in messages if "i" not in m.body], "a stale or released epoch wrote"
    for report in reports:
        w = report["worker"]
        assert report["released_all"], f"worker {w} lost a lease no one could take"
        assert report["stale_landed"] == 0
        assert report["stale_refused"] == report["holds"] - 1
        assert (report["late_landed"], report["late_refused"]) == (0, report["holds"])
        mine = [m for m in messages if m.body["w"] == w]
        assert [m.body["i"] for m in mine] == list(range(per_worker))
        assert [[m.body["i"], m.seq, m.body["epoch"]] for m in mine] == report["written"]
    # Fencing: epochs never go back along the log, and each epoch is one worker's.
    epochs = [m.body["epoch"] for m in messages]
    assert epochs == sorted(epochs)
    owners: dict[int, set[int]] = defaultdict(set)
    for m in messages:
        owners[m.body["epoch"]].add(m.body["w"])
    assert all(len(ws) == 1 for ws in owners.values())
    # Every grant bumped the epoch by one and wrote at least once; all were released.
    holds = sum(r["holds"] for r in reports)
    assert sorted(owners) == list(range(1, holds + 1))
    session = await store.get_session(sid)
    assert (session.lease_epoch, session.lease_owner) == (holds, None)
