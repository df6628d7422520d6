"""Generated fault plans over a whole send (begin, appends, close) and its claim by a
worker: wherever the port fails, every message is stored exactly once, in order, and
the send ends as it would have with no fault at all."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import Store
from power_loop.store import NewMessage
from tests.store_faults.port_faults import Fault, FaultyDatabase

PLANS = st.lists(st.sampled_from([None, None, *Fault]), max_size=12).filter(
    lambda plan: "B, B, B" not in ", ".join("B" if f is Fault.BEGIN else "-" for f in plan))
"""Faults for the write attempts in turn. Never three lost connections in a row: the
store reports that the server is down after three (see core._CONNECTION_ATTEMPTS)."""


def said(text: str, send_index: int = 0) -> NewMessage:
    return NewMessage(send_index, "user", {"text": text})


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=PLANS, appends=st.integers(min_value=0, max_value=4))
async def test_a_send_through_random_faults_is_stored_exactly_once(
        store: Store, plan: list[Fault | None], appends: int) -> None:
    db = FaultyDatabase(store._database, plan)
    through = Store(db, store.table_prefix)
    sid = (await store.create_session()).id
    start = await through.begin_send(sid, [said("q")], owner=f"send-{sid}", ttl=30)
    assert start.lease is not None
    for i in range(appends):
        seqs = await through.append_messages(sid, [said(f"a{i}"), said(f"b{i}")],
                                             epoch=start.lease.epoch, expect_seq=1 + 2 * i)
        assert seqs == [1 + 2 * i, 2 + 2 * i]
    await through.close_send(sid, 0, [said("end")], lease=start.lease, status="done",
                             stop_reason="end_turn", rounds=1, usage={})

    expected = ["q", *(t for i in range(appends) for t in (f"a{i}", f"b{i}")), "end"]
    stored = await store.read_messages(sid)
    assert [(m.seq, m.body["text"]) for m in stored] == list(enumerate(expected))
    session = await store.get_session(sid)
    assert (session.pending_send, session.lease_owner, session.send_count) == (None, None, 1)
    assert (await store.get_send(sid, 0)).status == "done"
