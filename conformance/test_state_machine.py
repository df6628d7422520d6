"""Stateful test: every backend behaves exactly like a plain in-memory model.

Hypothesis drives a real :class:`~power_loop.Store` through random sequences of session,
message, lease, send, delete and export/import operations with hostile ids and unicode
bodies. After each step the store must have returned what the model predicts (or raised
exactly the error it predicts), and every session must read back identical to the model
with seqs contiguous from 0.

The number of runs comes from a Hypothesis profile: ``ci`` (the default) keeps the file
well under a minute per backend; ``HYPOTHESIS_PROFILE=deep`` searches far longer (about
6 minutes for the three backends). ``--hypothesis-profile`` works too once something
registers the profiles before pytest configures (a conftest or ``-p`` plugin); this
module registers ``ci`` and ``deep`` only if nobody has.

Bugs this machine found are pinned by plain regression tests in
``test_model_findings.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance._session_model import (
    Message,
    Model,
    Session,
    check_message,
    check_send,
    check_session,
    exact_json,
    predict,
)
from power_loop import (
    InvalidArgumentError,
    Lease,
    NewMessage,
    PowerLoopError,
    SendNotFoundError,
    SessionBusyError,
    SessionNotFoundError,
    SessionRecord,
    Store,
    open_store,
)
from power_loop.testing import drop_store_tables, fresh_prefix

for _name, _examples, _steps in (("ci", 20, 25), ("deep", 400, 60)):
    try:
        settings.get_profile(_name)
    except InvalidArgument:
        settings.register_profile(_name, max_examples=_examples, stateful_step_count=_steps)

TTL = 3600.0  # leases never lapse during a run: the model has no clock
MAX_SESSIONS = 6
ROLES = ("user", "assistant", "tool", "system")
OWNERS = ("w1", "w2", "w1 ", "wörker 3")
REQUEST_KEYS = ("k", "K", "k ", "ключ", "🔑")

_UNICODE = st.characters(codec="utf-8")  # anything UTF-8 can carry, NUL included
_ID_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
HOSTILE_IDS = ("a", "a ", " a", "A", "\t", " ", "ß", "ss", "SS", "\u00e9", "e\u0301", "😀",
               "\u202eevil", "\ufeffbom", "'; DROP TABLE sessions; --", "%s", "%%", "?",
               "$1", ":name", "\\", '"', "`", "NULL", "a" * 200, "😀" * 200, "\u00e9" * 200)
SESSION_IDS = st.one_of(st.sampled_from(HOSTILE_IDS), st.text(_ID_CHARS, min_size=1, max_size=200))
INVALID_IDS = ("", "a\x00b", "x" * 201, "\ud800")  # empty, NUL, too long, not UTF-8

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(_UNICODE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(_UNICODE, max_size=6), inner, max_size=3),
    max_leaves=8)
PROMPTS = st.none() | st.text(_UNICODE, max_size=20)
METADATA = st.dictionaries(st.text(_UNICODE, max_size=5), JSON, max_size=3)
BODIES = st.dictionaries(st.text(_UNICODE, max_size=8), JSON, max_size=4)
MESSAGES = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(ROLES), BODIES),
                    min_size=1, max_size=4)
BATCHES = st.one_of(st.just([]), MESSAGES)  # a send may open or close without messages
MOSTLY_TRUE = st.sampled_from((True, True, True, False))
EPOCH_CHOICES = st.sampled_from(("none", "none", "current", "current", "stale", "ahead"))
OUTCOMES = st.fixed_dictionaries({
    "status": st.sampled_from(("done", "failed", "cancelled", "aborted")),
    "stop_reason": st.none() | st.sampled_from(("end_turn", "max_rounds")),
    "rounds": st.integers(0, 9),
    "usage": st.dictionaries(st.sampled_from(("output", "input")), st.integers(0, 10**9)),
    "error": st.none() | st.fixed_dictionaries({"message": st.text(_UNICODE, max_size=8)}),
})


@dataclass(frozen=True)
class Snapshot:
    """An export and the model state it was taken from."""

    session_id: str
    lines: tuple[str, ...]
    state: Session


def _as_new(messages: list[tuple[int, str, dict[str, Any]]]) -> list[NewMessage]:
    return [NewMessage(i, role, body) for i, role, body in messages]


def _as_model(messages: list[tuple[int, str, dict[str, Any]]]) -> list[Message]:
    return [Message(i, role, exact_json(body)) for i, role, body in messages]


def _split_epoch(lines: tuple[str, ...]) -> tuple[list[str], int]:
    """An export's lines, key order kept, without the session's lease epoch; and that epoch."""
    items = [json.loads(line) for line in lines]
    epoch = next(i["row"].pop("lease_epoch") for i in items if i.get("table") == "sessions")
    return [exact_json(i) for i in items], epoch


class StoreMachine(RuleBasedStateMachine):
    """One fresh store (own tables, own event loop) per run, checked against a Model."""

    sessions = Bundle("sessions")
    leases = Bundle("leases")
    snapshots = Bundle("snapshots")

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.model = Model()
        self.loop = asyncio.new_event_loop()
        try:
            self.store: Store = self.loop.run_until_complete(
                open_store(dsn, table_prefix=fresh_prefix()))
        except BaseException:
            self.loop.close()
            raise

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(drop_store_tables(self.store))
        finally:
            self.loop.run_until_complete(self.store.aclose())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, Any]) -> tuple[Any, PowerLoopError | None]:
        try:
            return self.loop.run_until_complete(coro), None
        except PowerLoopError as exc:
            return None, exc

    def expect(self, coro: Coroutine[Any, Any, Any], error: type[PowerLoopError] | None) -> Any:
        """Run ``coro``; it must raise exactly ``error`` (or nothing when it is None)."""
        result, raised = self.run(coro)
        assert type(raised) is (error or type(None)), f"expected {error}, store raised {raised!r}"
        return result

    def check_session(self, record: SessionRecord, sid: str) -> None:
        check_session(record, sid, self.model.sessions[sid])
        self.model.observe_incarnation(sid, record.incarnation)

    def epoch(self, sid: str, choice: str) -> int | None:
        current = self.model.sessions[sid].lease_epoch if sid in self.model.sessions else 0
        return {"none": None, "current": current, "stale": current - 1,
                "ahead": current + 1}[choice]

    # -- sessions ----------------------------------------------------------------------

    @initialize(target=sessions, sid=st.none() | SESSION_IDS, prompt=PROMPTS, metadata=METADATA)
    def first_session(self, sid: str | None, prompt: str | None,
                      metadata: dict[str, Any]) -> Any:
        # Every run starts with a session, so no run is spent on session-less rules only.
        return self.create_session(sid, prompt, metadata)

    @precondition(lambda self: len(self.model.sessions) < MAX_SESSIONS)
    @rule(target=sessions, sid=st.none() | SESSION_IDS | sessions, prompt=PROMPTS,
          metadata=METADATA)
    def create_session(self, sid: str | None, prompt: str | None,
                       metadata: dict[str, Any]) -> Any:
        record, raised = self.run(
            self.store.create_session(sid, system_prompt=prompt, metadata=metadata))
        created = record.id if record is not None else sid
        assert created is not None, f"create_session(None) raised {raised!r}"
        _, error = predict(self.model.create, created, prompt, exact_json(metadata))
        assert type(raised) is (error or type(None)), f"expected {error}, store raised {raised!r}"
        if record is not None:
            self.check_session(record, created)
        return created

    @rule(sid=consumes(sessions))
    def delete_session(self, sid: str) -> None:
        _, error = predict(self.model.delete, sid)
        self.expect(self.store.delete_session(sid), error)

    @rule(sid=st.one_of(SESSION_IDS, st.sampled_from(INVALID_IDS)))
    def foreign_id(self, sid: str) -> None:
        """An id the model may not know, or one that is not a valid id at all."""
        if sid in INVALID_IDS:
            self.expect(self.store.create_session(sid), InvalidArgumentError)
            self.expect(self.store.append_messages(sid, _as_new([(0, "user", {})])),
                        InvalidArgumentError)
            return
        next_seq, error = predict(lambda: len(self.model.get(sid).messages))
        assert self.expect(self.store.next_seq(sid), error) == next_seq
        if error:
            self.expect(self.store.read_messages(sid), error)

    # -- messages ----------------------------------------------------------------------

    @rule(sid=sessions, messages=MESSAGES, choice=EPOCH_CHOICES, extend=st.booleans())
    def append(self, sid: str, messages: list[Any], choice: str, extend: bool) -> None:
        epoch = self.epoch(sid, choice)
        seqs: list[int] | None
        error: type[PowerLoopError] | None
        if extend and epoch is None:
            seqs, error = None, InvalidArgumentError
        else:
            seqs, error = predict(self.model.append, sid, _as_model(messages), epoch)
        got = self.expect(self.store.append_messages(
            sid, _as_new(messages), epoch=epoch, extend_lease=TTL if extend else None), error)
        assert got == seqs

    @rule(lease=leases, messages=MESSAGES)
    def fenced_append(self, lease: Lease, messages: list[Any]) -> None:
        sid = lease.session_id
        seqs, error = predict(self.model.append, sid, _as_model(messages), lease.epoch)
        got = self.expect(self.store.append_messages(sid, _as_new(messages), epoch=lease.epoch),
                          error)
        assert got == seqs

    @rule(sid=sessions, from_seq=st.integers(-2, 12), limit=st.none() | st.integers(0, 5))
    def read_messages(self, sid: str, from_seq: int, limit: int | None) -> None:
        error: type[PowerLoopError] | None = None
        if from_seq < 0:
            error = InvalidArgumentError
        elif sid not in self.model.sessions:
            error = SessionNotFoundError
        session = self.model.sessions.get(sid)
        expected = [] if error else list(enumerate(session.messages if session else []))
        expected = expected[max(from_seq, 0):][:limit]
        got = self.expect(self.store.read_messages(sid, from_seq=from_seq, limit=limit), error)
        assert [r.seq for r in (got or [])] == [seq for seq, _ in expected]
        for record, (seq, message) in zip(got or [], expected, strict=True):
            check_message(record, sid, seq, message)

    @rule(sid=sessions)
    def get_session(self, sid: str) -> None:
        expected, error = predict(lambda: len(self.model.get(sid).messages))
        assert self.expect(self.store.next_seq(sid), error) == expected
        record = self.expect(self.store.get_session(sid), error)
        if record is None:
            self.expect(self.store.get_send(sid, 0), SessionNotFoundError)
            return
        session = self.model.sessions[sid]
        self.check_session(record, sid)
        for send in session.sends[-1:]:
            check_send(self.expect(self.store.get_send(sid, send.index), None), sid, send)
        self.expect(self.store.get_send(sid, len(session.sends)), SendNotFoundError)

    # -- leases ------------------------------------------------------------------------

    @rule(target=leases, sid=sessions, owner=st.sampled_from(OWNERS))
    def acquire(self, sid: str, owner: str) -> Any:
        holder = self.model.sessions[sid].lease_owner if sid in self.model.sessions else None
        epoch, error = predict(self.model.acquire, sid, owner)
        lease, raised = self.run(self.store.acquire_lease(sid, owner, ttl=TTL))
        assert type(raised) is (error or type(None)), f"expected {error}, store raised {raised!r}"
        if isinstance(raised, SessionBusyError):
            assert raised.holder == holder
        if lease is None:
            return multiple()
        assert (lease.session_id, lease.owner, lease.epoch) == (sid, owner, epoch)
        return lease

    @rule(lease=leases)
    def renew(self, lease: Lease) -> None:
        _, error = predict(self.model.renew, lease.session_id, lease.owner, lease.epoch)
        renewed = self.expect(self.store.renew_lease(lease, ttl=TTL), error)
        if renewed is not None:
            assert (renewed.owner, renewed.epoch) == (lease.owner, lease.epoch)

    @rule(lease=leases)
    def release(self, lease: Lease) -> None:
        expected = self.model.release(lease.session_id, lease.owner, lease.epoch)
        assert self.expect(self.store.release_lease(lease), None) is expected

    # -- sends -------------------------------------------------------------------------

    @rule(sid=sessions, messages=BATCHES, choice=EPOCH_CHOICES,
          source=st.sampled_from(("user", "timer")), key=st.none() | st.sampled_from(REQUEST_KEYS))
    def start_send(self, sid: str, messages: list[Any], choice: str, source: str,
                   key: str | None) -> None:
        epoch = self.epoch(sid, choice)
        send, error = predict(self.model.start_send, sid, _as_model(messages), epoch, source, key)
        record = self.expect(self.store.start_send(
            sid, _as_new(messages), epoch=epoch, source=source, request_key=key), error)
        if record is not None:
            check_send(record, sid, send)

    def _index(self, sid: str, pending: bool) -> int:
        """The pending send's index, or (``pending`` False) one that is not pending."""
        session = self.model.sessions.get(sid)
        index = session.pending_send if session and session.pending_send is not None else 0
        return index if pending else index + 1

    @rule(sid=sessions, pending=MOSTLY_TRUE, messages=BATCHES, choice=EPOCH_CHOICES,
          outcome=OUTCOMES)
    def finish_send(self, sid: str, pending: bool, messages: list[Any], choice: str,
                    outcome: dict[str, Any]) -> None:
        index, epoch = self._index(sid, pending), self.epoch(sid, choice)
        send, error = predict(self.model.finish_send, sid, index, _as_model(messages), epoch,
                              False, outcome)
        record = self.expect(self.store.finish_send(sid, index, _as_new(messages), epoch=epoch,
                                                    **outcome), error)
        if record is not None:
            check_send(record, sid, send)

    @rule(lease=leases, pending=MOSTLY_TRUE, messages=BATCHES, outcome=OUTCOMES)
    def finish_send_and_release(self, lease: Lease, pending: bool, messages: list[Any],
                                outcome: dict[str, Any]) -> None:
        sid = lease.session_id
        index = self._index(sid, pending)
        send, error = predict(self.model.finish_send, sid, index, _as_model(messages),
                              lease.epoch, True, outcome)
        record = self.expect(self.store.finish_send(sid, index, _as_new(messages),
                                                    release=lease, **outcome), error)
        if record is not None:
            check_send(record, sid, send)

    @rule(lease=leases, pending=MOSTLY_TRUE, messages=BATCHES,
          error=st.fixed_dictionaries({"message": st.text(_UNICODE, max_size=8)}))
    def pause_send(self, lease: Lease, pending: bool, messages: list[Any],
                   error: dict[str, Any]) -> None:
        sid = lease.session_id
        index = self._index(sid, pending)
        first, raised = predict(self.model.pause_send, sid, index, _as_model(messages),
                                lease.epoch, error)
        got = self.expect(self.store.pause_send(sid, index, _as_new(messages), lease=lease,
                                                error=error), raised)
        assert got == first

    @rule(target=leases, sid=sessions, messages=BATCHES, owner=st.sampled_from(OWNERS),
          key=st.none() | st.sampled_from(REQUEST_KEYS))
    def begin_send(self, sid: str, messages: list[Any], owner: str, key: str | None) -> Any:
        prompt = self.model.sessions[sid].system_prompt if sid in self.model.sessions else None
        opened, error = predict(self.model.begin_send, sid, _as_model(messages), owner, "user",
                                key)
        start = self.expect(self.store.begin_send(sid, _as_new(messages), owner=owner, ttl=TTL,
                                                  request_key=key), error)
        if start is None:
            return multiple()
        epoch, send = opened
        assert (start.send_index, start.first_seq) == (send.index, send.first_seq)
        if epoch is None:
            assert start.lease is None and start.existing is not None
            check_send(start.existing, sid, send)
            return multiple()
        assert start.existing is None and start.system_prompt == prompt
        assert exact_json(start.metadata) == self.model.sessions[sid].metadata
        self.model.observe_incarnation(sid, start.incarnation)
        assert start.lease is not None
        assert (start.lease.session_id, start.lease.owner, start.lease.epoch) == (
            sid, owner, epoch)
        return start.lease

    @rule(target=leases, sid=sessions, owner=st.sampled_from(OWNERS))
    def claim(self, sid: str, owner: str) -> Any:
        expected, error = predict(self.model.claim, sid, owner)
        claim = self.expect(self.store.claim_session(sid, owner=owner, ttl=TTL), error)
        if claim is None:
            return multiple()
        assert (claim.lease.epoch, claim.pending_send, claim.next_seq,
                claim.system_prompt) == expected
        assert (claim.lease.session_id, claim.lease.owner) == (sid, owner)
        assert exact_json(claim.metadata) == self.model.sessions[sid].metadata
        self.model.observe_incarnation(sid, claim.incarnation)
        return claim.lease

    # -- export / import ---------------------------------------------------------------

    async def _export(self, sid: str) -> tuple[str, ...]:
        return tuple([line async for line in self.store.export_session(sid)])

    @rule(target=snapshots, sid=sessions)
    def export(self, sid: str) -> Any:
        state, error = predict(self.model.snapshot, sid)
        lines = self.expect(self._export(sid), error)
        return multiple() if lines is None else Snapshot(sid, lines, state)

    @rule(snapshot=snapshots, replace=st.booleans())
    def import_snapshot(self, snapshot: Snapshot, replace: bool) -> None:
        sid = snapshot.session_id
        _, error = predict(self.model.restore, sid, snapshot.state, replace)
        got = self.expect(self.store.import_session(snapshot.lines, replace=replace), error)
        if error is None:
            assert got == sid
            self.check_reexport(sid, snapshot.lines)

    @rule(sid=sessions)
    def export_import_replace(self, sid: str) -> None:
        state, error = predict(self.model.snapshot, sid)
        lines = self.expect(self._export(sid), error)
        if lines is not None:
            self.model.restore(sid, state, replace=True)
            assert self.expect(self.store.import_session(lines, replace=True), None) == sid
            self.check_reexport(sid, lines)

    def check_reexport(self, sid: str, imported: tuple[str, ...]) -> None:
        """Exporting what was imported gives it back, but for an epoch raised by a replace."""
        items, epoch = _split_epoch(self.expect(self._export(sid), None))
        assert items == _split_epoch(imported)[0]
        assert epoch == self.model.sessions[sid].lease_epoch

    # -- the whole store equals the model ----------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        listed = {r.id: r for r in self.expect(self.store.list_sessions(limit=100), None)}
        assert sorted(listed) == sorted(self.model.sessions)
        for sid, session in self.model.sessions.items():
            self.check_session(listed[sid], sid)
            records = self.expect(self.store.read_messages(sid), None)
            assert [r.seq for r in records] == list(range(len(session.messages)))
            for seq, (record, message) in enumerate(zip(records, session.messages, strict=True)):
                check_message(record, sid, seq, message)
            sends = self.expect(self.store.list_sends(sid), None)
            assert len(sends) == len(session.sends)
            for record, send in zip(sends, session.sends, strict=True):
                check_send(record, sid, send)

def _settings() -> settings:
    name = os.environ.get("HYPOTHESIS_PROFILE") or settings.get_current_profile_name()
    if name not in ("ci", "deep"):
        name = "ci"
    return settings(settings.get_profile(name), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# A passing run takes well under a minute; a failing one then shrinks its example, which
# Hypothesis may pursue for up to five minutes against a real database.
@pytest.mark.timeout(900)
def test_store_matches_model(dsn: str) -> None:
    run_state_machine_as_test(
        lambda: StoreMachine(dsn), settings=_settings())

