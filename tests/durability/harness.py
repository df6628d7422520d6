"""Driving child processes and looking into the store from a synchronous test.

The tests are plain (synchronous) functions: they start, signal and wait for real
processes, and read the store through :class:`StoreView`, which keeps one event loop
(``asyncio.Runner``) and one open store for the whole test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.probes import database_now
from power_loop import MessageRecord, SendRecord, SessionRecord, Store, open_store
from power_loop.testing import drop_store_tables
from tests.durability.child import ChildArgs

REPO = Path(__file__).resolve().parents[2]
WAIT = 120.0
"""Generous bound on how long a child may take (the tests never assert on timings)."""

Shape = tuple[int, str]
"""A message as (send_index, kind): kind is user, call, result or text."""


def child_env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POWER_LOOP_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if crash_at is not None:
        env["POWER_LOOP_CRASH_AT"] = crash_at
    return env


class Child:
    """One ``python -m tests.durability.child`` process."""

    def __init__(self, args: ChildArgs, *, crash_at: str | None = None,
                 name: str = "child") -> None:
        self.args = args
        self.name = name
        self._log = Path(args.out).with_suffix(".log")
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.durability.child", args.to_json()],
                cwd=REPO, env=child_env(crash_at), stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.log()}"
                                 ) from None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]

    def report(self) -> dict[str, Any]:
        path = Path(self.args.out)
        assert path.exists(), f"{self.name} wrote no report:\n{self.log()}"
        report: dict[str, Any] = json.loads(path.read_text())
        return report

    def expect_exit(self, code: int) -> dict[str, Any]:
        """Wait; check the exit code; return the report."""
        got = self.wait()
        if got != code:
            out = Path(self.args.out)
            report = out.read_text() if out.exists() else "(no report)"
            raise AssertionError(f"{self.name} exited {got}, expected {code}\n"
                                 f"report: {report}\nlog:\n{self.log()}")
        return self.report()

    def expect_killed(self) -> None:
        got = self.wait()
        assert got == -signal.SIGKILL, (
            f"{self.name} exited {got}, expected death by SIGKILL\n{self.log()}")
        assert not Path(self.args.out).exists(), "a killed child cannot have written a report"

    def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def read_effects(path: Path) -> list[dict[str, Any]]:
    """The tools' side-effect records, in the order written."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def starts(effects: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The ``start`` records matching every ``key=value`` given."""
    return [e for e in effects if e["event"] == "start"
            and all(e[k] == v for k, v in match.items())]


def owner_pid(owner: str | None) -> int | None:
    """The pid in a loop's lease owner (``host:pid:nonce``)."""
    return None if owner is None else int(owner.rsplit(":", 2)[1])


# -- the store as the test sees it ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the store holds about one session."""

    session: SessionRecord
    sends: list[SendRecord]
    messages: list[MessageRecord]

    def shapes(self) -> list[Shape]:
        return [(m.send_index, kind(m.role, m.body["parts"])) for m in self.messages]

    def wire(self) -> list[dict[str, Any]]:
        """The messages as a request carries them (``LLMRequest.to_json`` form)."""
        return [{"role": m.role, "parts": m.body["parts"]} for m in self.messages]

    def send(self, index: int) -> SendRecord:
        (found,) = [s for s in self.sends if s.send_index == index]
        return found

    def of_send(self, index: int) -> list[MessageRecord]:
        return [m for m in self.messages if m.send_index == index]

    def check_consistent(self) -> None:
        """Seqs 0..N-1, send indexes 0..S-1, each send's messages one contiguous run in
        send order starting at its ``first_seq``, and every tool call paired."""
        seqs = [m.seq for m in self.messages]
        assert seqs == list(range(len(seqs))), f"seqs are not contiguous: {seqs}"
        assert self.session.next_seq == len(seqs)
        indexes = [s.send_index for s in self.sends]
        assert indexes == list(range(len(indexes))), f"send indexes: {indexes}"
        assert self.session.send_count == len(indexes)
        order = [m.send_index for m in self.messages]
        assert order == sorted(order), f"sends interleave: {order}"
        for send in self.sends:
            mine = self.of_send(send.send_index)
            assert mine, f"send #{send.send_index} has no messages"
            assert mine[0].seq == send.first_seq
            assert mine[0].role == "user", f"send #{send.send_index} does not open with the user"
        pending = [s.send_index for s in self.sends if s.status == "pending"]
        assert pending == ([] if self.session.pending_send is None
                           else [self.session.pending_send])
        assert_paired(self.wire(), allow_open_tail=self.session.pending_send is not None)


def kind(role: str, parts: Sequence[dict[str, Any]]) -> str:
    if role == "assistant":
        return "call" if any(p["kind"] == "tool_call" for p in parts) else "text"
    return "result" if role == "tool" else role


def assert_paired(messages: Sequence[dict[str, Any]], *, allow_open_tail: bool = False) -> None:
    """Each tool call is followed at once by exactly one result with its id, in order;
    no result stands alone; call ids are unique."""
    waiting: list[str] = []
    seen: set[str] = set()
    for i, message in enumerate(messages):
        parts = message["parts"]
        results = [p for p in parts if p["kind"] == "tool_result"]
        if waiting:
            assert message["role"] == "tool" and len(parts) == 1 and results, (
                f"message {i}: tool call {waiting[0]!r} is not followed by its result: "
                f"{message}")
            assert results[0]["call_id"] == waiting[0], (
                f"message {i}: expected the result of {waiting[0]!r}, got {results[0]}")
            waiting.pop(0)
            continue
        assert not results, f"message {i}: a tool result answers no call: {message}"
        for part in parts:
            if part["kind"] == "tool_call":
                assert part["id"] not in seen, f"message {i}: call id {part['id']!r} reused"
                seen.add(part["id"])
                waiting.append(part["id"])
    assert allow_open_tail or not waiting, f"tool calls {waiting} have no result"


def assert_requests_sound(requests: Sequence[dict[str, Any]], history: Snapshot) -> None:
    """Every request is well paired and is exactly the stored history up to its point."""
    stored = history.wire()
    for n, request in enumerate(requests):
        messages = request["messages"]
        assert_paired(messages)
        assert messages == stored[:len(messages)], (
            f"request {n} is not the stored history: {messages} vs {stored}")


class StoreView:
    """The test's own connection to the store (its own event loop, kept open)."""

    def __init__(self, dsn: str, prefix: str) -> None:
        self.dsn = dsn
        self.prefix = prefix
        self._runner = asyncio.Runner()
        self.store: Store = self._runner.run(open_store(dsn, table_prefix=prefix))

    def run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def new_session(self) -> str:
        record: SessionRecord = self.run(self.store.create_session())
        return record.id

    def session(self, session_id: str) -> SessionRecord:
        record: SessionRecord = self.run(self.store.get_session(session_id))
        return record

    def lease_lapsed(self, session_id: str) -> bool:
        """Whether the session's lease is free or lapsed, by the database clock."""
        async def lapsed() -> bool:
            expires = (await self.store.get_session(session_id)).lease_expires_at
            return expires is None or await database_now(self.store) > expires

        return bool(self.run(lapsed()))

    def snapshot(self, session_id: str) -> Snapshot:
        async def read() -> Snapshot:
            return Snapshot(await self.store.get_session(session_id),
                            await self.store.list_sends(session_id),
                            await self.store.read_messages(session_id))

        snap: Snapshot = self.run(read())
        return snap

    def close(self) -> None:
        try:
            self.run(drop_store_tables(self.store))
        finally:
            self.run(self.store.aclose())
            self._runner.close()


class ThreadedStoreView(StoreView):
    """A :class:`StoreView` whose event loop runs in a thread of its own.

    Playwright's sync API keeps an event loop running in the test's thread, where
    ``asyncio.run`` (and a ``Runner``) refuse to start one.
    """

    def __init__(self, dsn: str, prefix: str) -> None:
        self.dsn, self.prefix = dsn, prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="store-view")
        self._thread.start()
        self.store = self.run(open_store(dsn, table_prefix=prefix))

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        try:
            try:
                self.run(drop_store_tables(self.store))
            finally:
                self.run(self.store.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
