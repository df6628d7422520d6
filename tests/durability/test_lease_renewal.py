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
from tests.durability.harness import StoreView

pytestmark = pytest.mark.slow

SENDS = 300
TTLS = (0.01, 0.003)
"""Seconds: a renewal every 3 ms, then every 1 ms, so a send's end often meets one in
flight (which timing exposes which bug depends on the engine)."""

def test_back_to_back_sends_with_a_tiny_lease(view: StoreView, spawn: Spawn) -> None:
    # What used to go wrong here: a renewal in flight as the final write released the
    # lease made a finished send raise LeaseLostError; a renewer not awaited at the end
    # of its send cancelled the caller's next send. The child exits non-zero on either.
    for ttl in TTLS:
        sid = view.new_session()
        child = spawn(f"sender-{ttl}", sid,
                      [{"op": "send", "text": f"m{k}"} for k in range(SENDS)],
                      lease_ttl=ttl, keep_requests=False)
        report = child.expect_exit(EXIT_OK)
        assert [r["send_index"] for r in report["results"]] == list(range(SENDS))
        snap = view.snapshot(sid)
        snap.check_consistent()
        assert [s.status for s in snap.sends] == ["done"] * SENDS
        assert snap.session.pending_send is None and snap.session.lease_owner is None
