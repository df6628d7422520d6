"""A writer process for the multi-process tests: ``python -m conformance._append_worker``.

It reads its job as one JSON object on stdin, opens its own store, waits at a start
barrier with the other workers so their writes really overlap, appends, and prints one
JSON line describing what it wrote (each append's counter, session, seq, lease epoch).

Jobs (``mode``):
    plain:  ``count`` appends, one ``append_messages`` call each; append ``i`` goes to
            ``sessions[i % len(sessions)]``.
    fenced: ``count`` appends to ``sessions[0]``, each fenced by a lease the worker takes
            (retrying while another worker holds it), a few per hold. Two writes must
            be refused every time: one with its previous epoch while it holds a newer
            lease (superseded), one with the epoch it has just released.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from power_loop import LeaseLostError, NewMessage, SessionBusyError, Store, open_store

LEASE_TTL = 600.0  # never lapses during a test: takeovers happen only after a release
BARRIER_TIMEOUT = 120.0


class StartBarrier:
    """Workers arrive (a file each) and wait until the parent opens the gate (a file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def arrive_and_wait(self, worker: int) -> None:
        (self.directory / f"ready-{worker}").touch()
        deadline = time.monotonic() + BARRIER_TIMEOUT
        while not (self.directory / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the start barrier never opened")
            time.sleep(0.002)

    def arrived(self) -> int:
        return len(list(self.directory.glob("ready-*")))

    def open(self) -> None:
        (self.directory / "go").touch()


def _message(body: dict[str, Any]) -> list[NewMessage]:
    return [NewMessage(0, "user", body)]


async def plain(store: Store, worker: int, sessions: list[str], count: int) -> dict[str, Any]:
    written = []
    for i in range(count):
        k = i % len(sessions)
        [seq] = await store.append_messages(sessions[k], _message({"w": worker, "i": i}))
        written.append([i, k, seq])
    return {"written": written}


async def fenced(store: Store, worker: int, session: str, count: int) -> dict[str, Any]:
    owner = f"worker {worker}"
    written: list[list[int]] = []
    holds = stale_refused = stale_landed = late_refused = late_landed = 0
    released_all = True
    previous = None

    async def append(epoch: int) -> None:
        i = len(written)
        body = {"w": worker, "i": i, "epoch": epoch}
        [seq] = await store.append_messages(session, _message(body), epoch=epoch)
        written.append([i, seq, epoch])

    while len(written) < count:
        try:
            lease = await store.acquire_lease(session, owner, ttl=LEASE_TTL)
        except SessionBusyError:
            await asyncio.sleep(random.uniform(0.001, 0.005))
            continue
        holds += 1
        if previous is not None:
            try:  # the previous epoch is stale now that we hold a newer one
                await store.append_messages(session, _message({"w": worker, "stale": True}),
                                            epoch=previous.epoch)
                stale_landed += 1
            except LeaseLostError:
                stale_refused += 1
        for _ in range(min(1 + holds % 3, count - len(written))):
            await append(lease.epoch)
        released_all = await store.release_lease(lease) and released_all
        previous = lease
        try:  # a released lease no longer writes, even before anyone takes over
            await store.append_messages(session, _message({"w": worker, "late": True}),
                                        epoch=lease.epoch)
            late_landed += 1
        except LeaseLostError:
            late_refused += 1
        await asyncio.sleep(random.uniform(0, 0.002))  # let the others in
    return {"written": written, "holds": holds, "released_all": released_all,
            "stale_refused": stale_refused, "stale_landed": stale_landed,
            "late_refused": late_refused, "late_landed": late_landed}


async def main(job: dict[str, Any]) -> dict[str, Any]:
    store = await open_store(job["dsn"], table_prefix=job["table_prefix"])
    try:
        # Connected first, so the barrier lines up the writes, not the connection setup.
        await store.next_seq(job["sessions"][0])
        barrier = StartBarrier(Path(job["barrier"]))
        await asyncio.to_thread(barrier.arrive_and_wait, job["worker"])
        if job["mode"] == "fenced":
            result = await fenced(store, job["worker"], job["sessions"][0], job["count"])
        else:
            result = await plain(store, job["worker"], job["sessions"], job["count"])
    finally:
        await store.aclose()
    return {"worker": job["worker"], **result}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.stdin.read())))))
