"""Running ``power-loop worker`` processes, and reading what they did from the store.

A :class:`WorkerProcess` is one real ``python -m power_loop.cli.main worker`` on the
test's store, with the application of :mod:`tests.workers.app`. The tests read the
store through :class:`~tests.durability.harness.StoreView` (one event loop and one open
store for the whole synchronous test) and the record file the app writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power_loop import SendRecord
from power_loop.timers import TimerRecord
from tests.durability.harness import Snapshot, StoreView

REPO = Path(__file__).resolve().parents[2]
APP = "tests.workers.app:make_loop"


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: ours, the repository importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PLW_") and k not in {"POWER_LOOP_CRASH_AT", "LD_PRELOAD",
                                                      "FAKETIME"}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class WorkerProcess:
    """One ``power-loop worker`` process (its output goes to ``log``).

    Args:
        env: Extra environment variables (``PLW_*`` for the app, ``LD_PRELOAD``...).
        options: Extra command-line options (``--grace``, ``--max-attempts``...).
    """

    def __init__(self, dsn: str, prefix: str, log: Path, *, poll: float = 0.2,
                 claim_ttl: float = 2.0, concurrency: int = 4,
                 env: dict[str, str] | None = None, options: Sequence[str] = ()) -> None:
        self.log_path = log
        command = [sys.executable, "-m", "power_loop.cli.main", "worker", "--dsn", dsn,
                   "--prefix", prefix, "--app", APP, "--poll", str(poll),
                   "--claim-ttl", str(claim_ttl), "--concurrency", str(concurrency),
                   "--quiet", *options]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, env=worker_env(env),
                                         stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} did not exit within {timeout}s:\n"
                                 f"{self.log()}") from None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, and wait for the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        return self.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """Make sure the process is gone (teardown)."""
        if self.alive():
            self.kill()


def wait_until(condition: Callable[[], bool], what: str, timeout: float,
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_record(path: Path) -> list[dict[str, Any]]:
    """The lines the app appended to its record file, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def events(lines: Sequence[dict[str, Any]], event_type: str, **match: Any) -> list[dict[str, Any]]:
    """The recorded events of one type matching every ``key=value``."""
    return [e for e in lines if e.get("kind") == "event" and e["type"] == event_type
            and all(e.get(k) == v for k, v in match.items())]


# -- the store -----------------------------------------------------------------------------


def all_timers(view: StoreView) -> list[TimerRecord]:
    timers: list[TimerRecord] = view.run(view.store.list_timers(limit=100_000))
    return timers


def timer_key(send: SendRecord) -> tuple[str, int] | None:
    """``(timer_id, fire)`` of a send a timer made (its request key), else ``None``."""
    if send.request_key is None or not send.request_key.startswith("timer:"):
        return None
    _, timer_id, fire = send.request_key.split(":")
    return timer_id, int(fire)


@dataclass(frozen=True, slots=True)
class Delivered:
    """Every timer fire found in the store, across sessions."""

    fires: Counter[tuple[str, int]]
    """How many sends each ``(timer_id, fire)`` has (exactly once is right)."""
    sends: dict[tuple[str, int], SendRecord]
    messages: Counter[tuple[str, str]]
    """``(session_id, text)`` of each user message marked ``source=timer``."""

    def of(self, timer_id: str) -> list[int]:
        return sorted(fire for (tid, fire) in self.fires if tid == timer_id)


def delivered(snapshots: Sequence[Snapshot]) -> Delivered:
    """Collect the timer fires recorded in these sessions."""
    fires: Counter[tuple[str, int]] = Counter()
    sends: dict[tuple[str, int], SendRecord] = {}
    texts: Counter[tuple[str, str]] = Counter()
    for snap in snapshots:
        for send in snap.sends:
            key = timer_key(send)
            if key is not None:
                assert send.source == "timer", f"{send} has a timer key but not the source"
                fires[key] += 1
                sends[key] = send
        for message in snap.messages:
            if message.role == "user" and message.body.get("meta", {}).get("source") == "timer":
                (part,) = message.body["parts"]
                texts[(message.session_id, part["text"])] += 1
    return Delivered(fires, sends, texts)


def check_settled(snap: Snapshot) -> None:
    """A session at rest: consistent, nothing pending, no lease held, all sends done."""
    snap.check_consistent()
    session = snap.session
    assert session.pending_send is None, f"{session.id}: send {session.pending_send} pending"
    assert session.lease_owner is None, f"{session.id}: lease still held by {session.lease_owner}"
    statuses = Counter(s.status for s in snap.sends)
    assert set(statuses) <= {"done"}, f"{session.id}: sends {dict(statuses)}"
