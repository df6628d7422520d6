"""``power-loop timers`` and parked work (``sessions list --parked``, ``unpark``) on
every backend: what an operator sees and does when workers gave up on something."""

from __future__ import annotations

import json

import pytest

from conformance.waiting import past
from power_loop import Message, NewMessage, Store
from power_loop.llm.messages import encode_message
from tests.cli_support import run_cli

pytestmark = pytest.mark.timeout(180)


async def park_a_session(store: Store, session_id: str) -> None:
    """A pending send whose process died, then a worker that died resuming it: parked
    at the next claim (``max_attempts=1``)."""
    await store.create_session(session_id)
    start = await store.begin_send(session_id, [NewMessage(0, "user", encode_message(
        Message.user("hello")))], owner="dead-process", ttl=0.05)
    assert start.lease is not None
    lease = start.lease
    for expected in (1, 0):
        await past(store, lease.expires_at)  # the last lease lapsed
        claims, parked = await store.claim_stranded_sessions("dead-worker", ttl=0.05,
                                                             limit=5, max_attempts=1)
        assert (len(claims), len(parked)) == (expected, 1 - expected)
        lease = claims[0].lease if claims else lease


async def test_timers_list_cancel_and_unpark(store: Store, dsn: str,
                                             table_prefix: str) -> None:
    where = ("--dsn", dsn, "--prefix", table_prefix)
    sid = (await store.create_session("alpha")).id
    hourly = await store.schedule_timer(sid, "every hour\nplease", delay=3600, every=3600)
    poison = await store.schedule_timer(sid, "poison", delay=0)
    (claim,) = await store.claim_due_timers("a-worker", ttl=30, limit=1)
    assert await store.park_timer(claim, {"reason": "the model was down"})

    listed = await run_cli("timers", "list", *where)
    assert listed.returncode == 0, listed.stderr
    header, first, second = listed.stdout.splitlines()
    assert header.split() == ["ID", "SESSION", "STATUS", "DUE", "(UTC)", "EVERY", "FIRES",
                              "ATTEMPTS", "LAST", "ERROR", "MESSAGE"]
    assert first.split()[:3] == [poison.timer_id, "alpha", "parked"]
    assert '{"reason":"the model was down"}' in first and first.endswith("poison")
    assert second.split()[:3] == [hourly.timer_id, "alpha", "scheduled"]
    assert "3600s" in second and second.endswith("every hour\\nplease")

    parked = await run_cli("timers", "list", *where, "--status", "parked", "--json")
    assert parked.returncode == 0, parked.stderr
    (shown,) = json.loads(parked.stdout)
    assert (shown["timer_id"], shown["status"], shown["attempts"], shown["last_error"]) == (
        poison.timer_id, "parked", 1, {"reason": "the model was down"})
    assert shown["due_at"] == poison.due_at.isoformat()

    limited = await run_cli("timers", "list", *where, "--limit", "1", "--json")
    assert [t["timer_id"] for t in json.loads(limited.stdout)] == [poison.timer_id]
    assert "pass --limit to see more" in limited.stderr
    nothing = await run_cli("timers", "list", *where, "--session", "beta")
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "no timers\n")
    bad = await run_cli("timers", "list", *where, "--status", "paused")
    assert bad.returncode == 2 and "invalid choice: 'paused'" in bad.stderr

    unparked = await run_cli("timers", "unpark", *where, poison.timer_id)
    assert unparked.returncode == 0, unparked.stderr
    assert unparked.stdout == (f"unparked timer {poison.timer_id!r}: workers will fire it "
                               "when due\n")
    now = await store.get_timer(poison.timer_id)
    assert now is not None and (now.status, now.attempts) == ("scheduled", 0)
    again = await run_cli("timers", "unpark", *where, poison.timer_id)
    assert (again.returncode, again.stderr) == (
        0, f"timer {poison.timer_id!r} is scheduled, not parked\n")

    cancelled = await run_cli("timers", "cancel", *where, hourly.timer_id)
    assert cancelled.stdout == f"cancelled timer {hourly.timer_id!r}\n"
    gone = await store.get_timer(hourly.timer_id)
    assert gone is not None and gone.status == "cancelled"
    twice = await run_cli("timers", "cancel", *where, hourly.timer_id)
    assert (twice.returncode, twice.stderr) == (
        0, f"timer {hourly.timer_id!r} is cancelled: nothing to cancel\n")

    unknown = await run_cli("timers", "unpark", *where, "no-such-timer")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error [invalid_argument]: no timer 'no-such-timer'")


async def test_parked_sessions_are_listed_shown_and_unparked(store: Store, dsn: str,
                                                             table_prefix: str) -> None:
    where = ("--dsn", dsn, "--prefix", table_prefix)
    await store.create_session("alpha")
    await park_a_session(store, "beta")

    parked = await run_cli("sessions", "list", *where, "--parked")
    assert parked.returncode == 0, parked.stderr
    header, row = parked.stdout.splitlines()
    assert header.split()[:2] == ["ID", "CREATED"]
    assert row.split()[0] == "beta" and row.endswith("#0 parked")
    everything = await run_cli("sessions", "list", *where)
    assert sorted(line.split()[0] for line in everything.stdout.splitlines()[1:]) == [
        "alpha", "beta"]

    shown = await run_cli("sessions", "show", *where, "beta")
    assert shown.returncode == 0, shown.stderr
    (sends,) = [line for line in shown.stdout.splitlines() if line.startswith("sends ")]
    assert "#0 pending, parked " in sends and sends.endswith("after 1 failed resumes")
    as_json = json.loads((await run_cli("sessions", "show", *where, "beta", "--json")).stdout)
    assert as_json["session"]["resume_attempts"] == 1
    assert as_json["session"]["parked_at"] is not None

    unparked = await run_cli("sessions", "unpark", *where, "beta")
    assert unparked.returncode == 0, unparked.stderr
    assert unparked.stdout == "unparked session 'beta': workers will resume send #0\n"
    session = await store.get_session("beta")
    assert (session.parked_at, session.resume_attempts, session.pending_send) == (None, 0, 0)
    again = await run_cli("sessions", "unpark", *where, "beta")
    assert (again.returncode, again.stderr) == (0, "session 'beta' is not parked\n")
    none_left = await run_cli("sessions", "list", *where, "--parked")
    assert (none_left.stdout, none_left.stderr) == ("", "no parked sessions\n")

    missing = await run_cli("sessions", "unpark", *where, "gamma")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error [session_not_found]: ")
