"""A send's lease renewer ends with the send: it never touches what the caller does next.

While a send runs, a background task renews its lease every ``lease_ttl / 3`` seconds;
when the send ends, the renewer is cancelled. A tiny ``lease_ttl`` makes renewals so
frequent that the send's end regularly lands while a renewal is in flight, which is
the case that must still end cleanly: one process sends many times in a row, and every
send must finish, with nothing cancelled that the caller did not cancel.
"""

from __future__ import annotations

import pytest

from tests.durability.child import EXIT_OK
from tests.durability.conftest import Spawn
from tests.durability.harness import Child, KnownBug, StoreView

pytestmark = pytest.mark.slow

SENDS = 300
TTLS = (0.01, 0.003)
"""Seconds: a renewal every 3 ms, then every 1 ms, so a send's end often meets one in
flight (which timing exposes which bug depends on the engine)."""

RENEWER_BUGS = (
    "BUG (postgresql, mysql): a send that finished reports LeaseLostError (no other process "
    "exists): a renewal in flight when the final write commits and releases the lease finds "
    "it released, so SendRun._renew sets _lease_lost and cancels the run, and run() turns "
    "the CancelledError into LeaseLostError although the send is done in the store. "
    "BUG (mysql): a lease renewer outlives its send and later cancels the caller's task. "
    "SendRun.run() cancels the renewer in `finally` without awaiting it; when the cancel "
    "lands during a renewal statement, aiomysql closes the connection and the cursor's "
    "close raises InterfaceError('Cancelled during execution') over the CancelledError; "
    "MySQLConnection._run translates it to a StoreError and SendRun._renew swallows it "
    "(`except PowerLoopError: continue`). Its next renewal finds the lease released, and "
    "it calls main.cancel() on the caller's task, now running the next send")


def check_renewer_bugs(child: Child, view: StoreView, session_id: str) -> None:
    """Raise :class:`KnownBug` if the child failed in one of the ways of RENEWER_BUGS."""
    if child.wait() == EXIT_OK:
        return
    report = child.report()
    error = report["error"] or {}
    if error.get("type") == "CancelledError":
        raise KnownBug(f"{child.name} was cancelled by no one: {error.get('traceback')}")
    if error.get("type") == "LeaseLostError":
        lost = len(report["results"])  # the sends run one after another from #0
        status = view.snapshot(session_id).send(lost).status
        if status == "done":
            raise KnownBug(f"{child.name}: send #{lost} is done in the store, yet the caller "
                           f"got {error['message']}")


def test_back_to_back_sends_with_a_tiny_lease(backend: str, view: StoreView, spawn: Spawn,
                                              request: pytest.FixtureRequest) -> None:
    if backend in ("postgresql", "mysql"):
        request.applymarker(pytest.mark.xfail(raises=KnownBug, strict=True,
                                              reason=RENEWER_BUGS))
    for ttl in TTLS:
        sid = view.new_session()
        child = spawn(f"sender-{ttl}", sid,
                      [{"op": "send", "text": f"m{k}"} for k in range(SENDS)],
                      lease_ttl=ttl, keep_requests=False)
        check_renewer_bugs(child, view, sid)
        report = child.expect_exit(EXIT_OK)
        assert [r["send_index"] for r in report["results"]] == list(range(SENDS))
        snap = view.snapshot(sid)
        snap.check_consistent()
        assert [s.status for s in snap.sends] == ["done"] * SENDS
        assert snap.session.pending_send is None and snap.session.lease_owner is None
