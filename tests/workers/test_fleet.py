"""A thousand timers, three ``power-loop worker`` processes, and SIGKILLs all along.

Fifty sessions get 1,000 one-shot timers due over a few seconds (one in eight makes the
model call a tool, and every answer takes a moment, so kills land inside sends) plus a
few recurring timers (``fire_once`` and ``skip``). Three workers fire them; every second
or two one of them is SIGKILLed at random and a fresh one started in its place. When the
one-shot timers are all done and no send is left pending, the workers are stopped with
SIGTERM and the store must show:

* every one-shot timer ``done``, fired once; every recurring timer on its own schedule
  (``due_at = first due + k * every``, ``k >= fire_count``), its fires numbered
  ``0 .. fire_count - 1``; a ``fire_once`` one fired, a ``skip`` one fired or skipped
  (its slots can all come more than a period late on a fleet this busy);
* every fire in its session exactly once: one send keyed ``timer:<id>:<n>``, one user
  message marked ``source=timer`` with the timer's text, nothing lost, nothing twice;
* no tool call run twice; every session consistent (contiguous seqs, sends in order,
  calls paired), idle, its lease released, every send ``done``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from power_loop import Store
from tests.durability.harness import StoreView, owner_pid
from tests.workers.app import TOOL
from tests.workers.conftest import StartWorker
from tests.workers.support import (
    WorkerProcess,
    all_timers,
    check_settled,
    delivered,
    events,
    read_record,
    wait_until,
)

pytestmark = pytest.mark.slow

SESSIONS = 50
ONE_SHOT = 1000
RECURRING = (("fire_once", 1.5), ("fire_once", 2.5), ("skip", 1.0), ("skip", 2.0))
WORKERS = 3
SPREAD = 6.0
"""One-shot timers fall due over this many seconds after they are scheduled."""
KILL_EVERY = (0.8, 2.0)
DEADLINE = 150.0
"""Generous bound on the whole run (the test never asserts on timings)."""


async def schedule_all(store: Store, sessions: list[str]) -> tuple[list[str], list[str]]:
    """Schedule the one-shot and recurring timers, a few at a time."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        text = f"tick {i}" + (f" {TOOL}" if i % 8 == 0 else "")
        async with gate:
            timer = await store.schedule_timer(sessions[i % len(sessions)], text,
                                               delay=1.0 + SPREAD * i / ONE_SHOT)
        return timer.timer_id

    async def recurring(j: int, missed: str, every: float) -> str:
        timer = await store.schedule_timer(sessions[j], f"every {j} ({missed})",
                                           delay=1.0, every=every, missed=missed)
        return timer.timer_id

    repeat = [await recurring(j, m, e) for j, (m, e) in enumerate(RECURRING)]
    return list(await asyncio.gather(*(one(i) for i in range(ONE_SHOT)))), repeat


def progress(view: StoreView) -> str:
    """Where the run stands (for failure messages)."""
    timers = all_timers(view)
    sessions = view.run(view.store.list_sessions(limit=1000))
    return (f"timers {dict(Counter(t.status for t in timers))}, "
            f"attempts {dict(Counter(t.attempts for t in timers))}, "
            f"errors {dict(Counter(str(t.last_error) for t in timers if t.last_error))}, "
            f"{sum(s.pending_send is not None for s in sessions)} sessions pending, "
            f"{sum(s.parked_at is not None for s in sessions)} parked")


def stuck_report(view: StoreView, record_path: Path) -> str:
    """For a failure message: what every worker (the killed ones too) logged above INFO,
    and the recorded trail of each session still pending."""
    logs = sorted(record_path.parent.glob("w*.log"))
    warned = [f"{path.name}: {line}" for path in logs
              for line in path.read_text(errors="replace").splitlines()
              if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    lines = read_record(record_path)
    first = min((e["t"] for e in lines if "t" in e), default=0.0)
    out = [f"{len(warned)} warnings in {len(logs)} worker logs:", *warned[-40:]]
    pending = [s for s in view.run(view.store.list_sessions(limit=1000))
               if s.pending_send is not None]
    for s in pending[:5]:
        out.append(f"session {s.id} (send #{s.pending_send} pending, "
                   f"{s.resume_attempts} resume attempts, parked {s.parked_at}):")
        trail = [e for e in lines if e.get("session_id") == s.id]
        out += [f"  {e.get('t', first) - first:7.3f} pid {e['pid']} "
                f"{ {k: v for k, v in e.items() if k not in ('t', 'pid', 'session_id')} }"
                for e in trail[-25:]]
    return "\n".join(out)


def test_a_thousand_timers_survive_random_sigkills(backend: str, view: StoreView,
                                                   start_worker: StartWorker,
                                                   record_path: Path) -> None:
    seed = int(os.environ.get("PLW_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    began = time.monotonic()
    sessions = [view.new_session() for _ in range(SESSIONS)]
    one_shot, repeat = view.run(schedule_all(view.store, sessions))
    first_due = {t.timer_id: t.due_at for t in all_timers(view) if t.timer_id in repeat}
    # The loop's default on_pending="raise": the workers resume stranded sends themselves.
    env = {"PLW_MODEL_DELAY": "0.02", "PLW_TOOL_SLEEP": "0.1", "PLW_LEASE_TTL": "2"}
    made = 0

    def start() -> WorkerProcess:
        nonlocal made
        made += 1
        return start_worker(f"w{made}", env=env)

    workers = [start() for _ in range(WORKERS)]
    kills = 0

    def one_shots_settled() -> bool:
        """Every one-shot timer done, or given up on (parked)."""
        return not any(t.status == "scheduled" and t.every is None for t in all_timers(view))

    deadline = began + DEADLINE
    try:
        while not one_shots_settled():
            assert time.monotonic() < deadline, (
                f"not done in {DEADLINE}s (seed {seed}, {kills} kills): {progress(view)}\n"
                + stuck_report(view, record_path))
            time.sleep(rng.uniform(*KILL_EVERY))
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            kills += 1
            workers[victim] = start()
        # Let the sends the last kills left pending be resumed.
        wait_until(lambda: all(s.pending_send is None
                               for s in view.run(view.store.list_sessions(limit=1000))),
                   "no pending send", max(1.0, deadline - time.monotonic()), interval=0.2)
        # A recurring fire cut short by a kill is redelivered once its claim lapses; and
        # the last worker started has started (a SIGTERM before that would kill it).
        live = {w.pid for w in workers}

        def settled() -> bool:
            started = {e["pid"] for e in read_record(record_path) if e.get("kind") == "start"}
            return live <= started and all(owner_pid(t.claim_owner) in (None, *live)
                                           for t in all_timers(view))

        wait_until(settled, "every worker started, no timer claimed by a killed one",
                   max(1.0, deadline - time.monotonic()), interval=0.2)
        codes = [w.terminate() for w in workers]
    finally:
        for worker in workers:
            worker.stop()
    assert codes == [0] * WORKERS, [w.log() for w in workers]
    elapsed = time.monotonic() - began

    # -- the timers --------------------------------------------------------------------
    timers = {t.timer_id: t for t in all_timers(view)}
    assert set(timers) == set(one_shot) | set(repeat)
    assert all(t.status != "parked" for t in timers.values()), progress(view)
    for tid in one_shot:
        timer = timers[tid]
        assert (timer.status, timer.fire_count, timer.claim_owner) == ("done", 1, None), timer
    lines = read_record(record_path)
    for tid in repeat:
        timer = timers[tid]
        assert timer.status == "scheduled", timer
        assert timer.every is not None
        slots = (timer.due_at - first_due[tid]) / timedelta(seconds=timer.every)
        assert abs(slots - round(slots)) < 1e-6, f"{timer} is off its schedule"
        assert round(slots) >= max(timer.fire_count, 1), timer
        if timer.missed == "fire_once":  # a late slot fires all the same
            assert timer.fire_count >= 1, timer
        else:  # a slot more than a period late is skipped: on a busy fleet, maybe all
            assert timer.fire_count >= 1 or events(lines, "TimerSkipped", timer_id=tid), timer

    # -- every fire, once, in its session ------------------------------------------------
    snapshots = [view.snapshot(sid) for sid in sessions]
    found = delivered(snapshots)
    twice = {k: n for k, n in found.fires.items() if n != 1}
    assert not twice, f"fires delivered more than once: {twice}"
    expected = {(tid, 0) for tid in one_shot}
    expected |= {(tid, n) for tid in repeat for n in range(timers[tid].fire_count)}
    assert set(found.fires) == expected, (
        f"lost: {sorted(expected - set(found.fires))[:10]}, "
        f"unexpected: {sorted(set(found.fires) - expected)[:10]}")
    for (tid, _), send in found.sends.items():
        assert send.session_id == timers[tid].session_id
    texts: Counter[tuple[str, str]] = Counter()
    for timer in timers.values():
        texts[(timer.session_id, timer.message)] += timer.fire_count
    assert found.messages == texts
    for snap in snapshots:
        check_settled(snap)
        by_seq = {m.seq: m for m in snap.messages}
        for send in snap.sends:
            first = by_seq[send.first_seq]
            assert first.body["meta"].get("source") == "timer"

    # -- no tool call ran twice -------------------------------------------------------------
    starts = Counter((e["session_id"], e["send_index"], e["call_id"]) for e in lines
                     if e.get("kind") == "tool" and e["event"] == "start")
    assert not [k for k, n in starts.items() if n > 1]
    tool_sends = sum(1 for s in snapshots for m in s.messages if m.role == "tool")
    assert tool_sends >= ONE_SHOT // 8
    resumed = sum(1 for e in lines if e.get("type") == "SendStarted" and e["resumed"])
    print(f"\n{backend}: {ONE_SHOT} one-shot + {sum(timers[t].fire_count for t in repeat)} "
          f"recurring fires, {kills} SIGKILLs, {made} worker processes, {resumed} sends "
          f"resumed, {elapsed:.1f}s (seed {seed})")


