"""SQLite never stalls the event loop: fsyncing commits, WAL checkpoints and large reads
run off it, while the common small statements still run on it.

A detector times every callback the event loop runs (each step of each task) and
subtracts the time the loop's thread spent waiting for a CPU (``run_delay`` in
``/proc/thread-self/schedstat``): what remains is what the callback itself held the loop,
computing or blocked in a system call such as ``fsync``. On a shared 2-core machine a
thread can wait tens of milliseconds for a CPU; that wait is the machine's, not ours, and
is left out. The bound, :data:`BOUND`, is far above what a send's statements take on the
loop (about 0.1 ms) and far below what the stalls this guards against took (an fsync per
commit, 7 ms median and 51 ms worst; a checkpoint, tens of ms; reading a 30 MB session,
hundreds of ms).
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from power_loop import (
    MessageRecord,
    NewMessage,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    open_store,
)

BOUND = 0.020
"""Seconds one callback may hold the event loop (CPU waits excluded)."""

_T = TypeVar("_T")
_SCHEDSTAT = "/proc/thread-self/schedstat"
BIG = 200 * 1024
"""The size of the appends that were measured stalling the loop under synchronous=FULL."""


def _cpu_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU."""
    with open(_SCHEDSTAT, "rb") as f:
        return int(f.read().split()[1]) / 1e9


@dataclass
class Stalls:
    """The callbacks that held the event loop longer than :data:`BOUND`."""

    callbacks: int = 0
    worst: float = 0.0
    over: list[tuple[float, str]] = field(default_factory=list)
    collecting: float = 0.0
    """Seconds spent in the cyclic garbage collector so far."""

    def report(self) -> str:
        shown = "\n".join(f"  {ms * 1000:.1f} ms: {what}" for ms, what in self.over[:10])
        return f"{len(self.over)} of {self.callbacks} callbacks held the loop:\n{shown}"


async def watched(work: Coroutine[Any, Any, _T]) -> tuple[_T, Stalls]:
    """Run ``work`` in a task of its own, timing each callback the event loop runs
    meanwhile (every step of that task, and of the tasks it starts)."""
    handle_type: Any = asyncio.events.Handle
    original: Callable[[Any], None] = handle_type._run
    stalls = Stalls()
    gc_started = 0.0

    loop_thread = threading.get_ident()

    def collecting(phase: str, info: dict[str, int]) -> None:
        # A full collection walks every live object: a pause of the interpreter that any
        # code allocating as much would meet, not a call that blocks; left out (when it
        # runs on the loop's thread: elsewhere it holds the GIL, and the loop waits).
        nonlocal gc_started
        if threading.get_ident() != loop_thread:
            return
        # Its CPU time: the wall time would count the CPU waits a second time.
        if phase == "start":
            gc_started = time.thread_time()
        else:
            stalls.collecting += time.thread_time() - gc_started

    def timed(handle: Any) -> None:
        waited, started, gc_before = _cpu_wait(), time.perf_counter(), stalls.collecting
        try:
            original(handle)
        finally:
            held = (time.perf_counter() - started - (_cpu_wait() - waited)
                    - (stalls.collecting - gc_before))
            stalls.callbacks += 1
            stalls.worst = max(stalls.worst, held)
            if held > BOUND:
                stalls.over.append((held, repr(handle)[:300]))

    handle_type._run = timed
    gc.callbacks.append(collecting)
    try:
        result = await asyncio.create_task(work)
    finally:
        handle_type._run = original
        gc.callbacks.remove(collecting)
    return result, stalls


pytestmark = pytest.mark.skipif(not os.path.exists(_SCHEDSTAT),
                                reason="needs Linux's per-thread scheduler statistics")


def _text(n: int, seed: int) -> str:
    # Not one repeated letter: the bodies should cost what real text costs to encode.
    return (f"{seed:08d} lorem ipsum dolor sit amet " * (n // 36 + 1))[:n]


async def _open(tmp_path: Path, **options: Any) -> Store:
    return await open_store(str(tmp_path / "app.db"), **options)


async def test_sends_with_large_appends_under_synchronous_full(tmp_path: Path) -> None:
    # Every COMMIT fsyncs the WAL under FULL: on a worker thread, not on the loop.
    answers = [_text(BIG, i) for i in range(40)]
    async with await _open(tmp_path, synchronous="full") as store:
        loop = StatefulAgentLoop(llm=ScriptedLLM(answers), store=store)
        session_id = await loop.new_session()

        async def sends() -> None:
            for i in range(40):
                await loop.send(_text(BIG, 1000 + i), session_id=session_id)

        _, stalls = await watched(sends())
        await loop.aclose()
        assert len(await store.read_messages(session_id)) == 80
    assert stalls.callbacks >= 40
    assert not stalls.over, stalls.report()


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: how often the WAL started over."""
    with wal.open("rb") as f:
        header = f.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


async def test_a_volume_of_writes_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    # ~24 MB through the WAL: several checkpoints' worth (one per ~4 MB), far below the
    # writer's own fallback (~64 MB), so only the checkpointer can restart the WAL.
    async with await _open(tmp_path) as store:
        await store.create_session("s")
        wal = tmp_path / "app.db-wal"

        async def appends() -> None:
            for i in range(120):
                await store.append_messages("s", [
                    NewMessage(0, "user", {"text": _text(BIG, i)})])
            # A complete checkpoint lets the next write start the WAL over: small writes
            # until that shows in its header (a checkpoint may still be at work).
            for _ in range(3000):
                if _wal_restarts(wal) > 0:
                    return
                await store.append_messages("s", [NewMessage(0, "user", {"text": "tick"})])
                await asyncio.sleep(0.01)

        _, stalls = await watched(appends())
        assert _wal_restarts(wal) > 0
        assert wal.stat().st_size < 120 * BIG  # it never held everything written
        assert (await store.read_messages("s", limit=1))[0].body["text"] == _text(BIG, 0)
    assert stalls.callbacks > 100
    assert not stalls.over, stalls.report()


def _structured(i: int) -> dict[str, Any]:
    """A message body shaped like a tool result: ~1.5 KB of nested JSON."""
    return {"text": _text(600, i), "parts": [
        {"kind": "row", "id": f"{i}-{k}", "value": k * 1.5, "tags": ["a", "b", str(k)]}
        for k in range(10)]}


async def test_reading_a_large_session(tmp_path: Path) -> None:
    async with await _open(tmp_path) as store:
        await store.create_session("s")
        for batch in range(20):  # 20,000 messages, about 30 MB of JSON
            await store.append_messages("s", [
                NewMessage(0, "user", _structured(batch * 1000 + i)) for i in range(1000)])
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async def read() -> list[MessageRecord]:
            other = asyncio.create_task(ticker())
            try:
                return await store.read_messages("s")
            finally:
                other.cancel()

        messages, stalls = await watched(read())
        assert not stalls.over, stalls.report()
        assert [m.seq for m in messages] == list(range(20_000))
        assert messages[12345].body == _structured(12345)
        assert ticks > 1  # other tasks ran while the session was read
