"""A plain in-memory model of one store's sessions, and checks that a real store matches it.

The model is the specification the stateful test holds every backend to: it predicts the
result of each store operation, or the exact error it must raise, without any SQL.
Leases never expire here (the test uses long TTLs), so nothing depends on timing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from power_loop import (
    InvalidArgumentError,
    LeaseLostError,
    MessageRecord,
    PowerLoopError,
    SendPendingError,
    SendRecord,
    SessionBusyError,
    SessionExistsError,
    SessionNotFoundError,
    SessionRecord,
)


def exact_json(value: Any) -> str:
    """JSON text that tells apart key order, ``-0.0`` and ``0.0``: what must round-trip."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Message:
    send_index: int
    role: str
    body: str  # exact_json of the body


@dataclass
class Send:
    index: int
    source: str
    request_key: str | None
    first_seq: int
    status: str = "pending"
    stop_reason: str | None = None
    rounds: int = 0
    usage: str = "{}"
    error: str | None = None


@dataclass
class Session:
    system_prompt: str | None
    metadata: str
    messages: list[Message] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    pending_send: int | None = None
    lease_owner: str | None = None
    lease_epoch: int = 0
    incarnation: str | None = None  # None: a new one is due (after create or import)

    def send_by_key(self, key: str | None) -> Send | None:
        return next((s for s in self.sends if key is not None and s.request_key == key), None)


class Model:
    """Every session, by id. Methods return what the store must return, or raise it."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.incarnations: set[str] = set()

    def observe_incarnation(self, sid: str, incarnation: str) -> None:
        """A session's incarnation is new after a create or an import, fixed otherwise."""
        session = self.sessions[sid]
        if session.incarnation is None:
            assert incarnation and incarnation not in self.incarnations
            self.incarnations.add(incarnation)
            session.incarnation = incarnation
        assert incarnation == session.incarnation

    def get(self, sid: str) -> Session:
        if sid not in self.sessions:
            raise SessionNotFoundError("model", session_id=sid)
        return self.sessions[sid]

    def fence(self, sid: str, epoch: int | None) -> Session:
        """A write with ``epoch`` lands only while the lease of that epoch is held."""
        session = self.get(sid)
        if epoch is not None and (epoch != session.lease_epoch or session.lease_owner is None):
            raise LeaseLostError("model", session_id=sid, epoch=epoch)
        return session

    def create(self, sid: str, system_prompt: str | None, metadata: str) -> None:
        if sid in self.sessions:
            raise SessionExistsError("model", session_id=sid)
        self.sessions[sid] = Session(system_prompt, metadata)

    def append(self, sid: str, messages: list[Message], epoch: int | None) -> list[int]:
        session = self.fence(sid, epoch)
        first = len(session.messages)
        session.messages.extend(messages)
        return list(range(first, first + len(messages)))

    def acquire(self, sid: str, owner: str) -> int:
        session = self.get(sid)
        if session.lease_owner is not None and session.lease_owner != owner:
            raise self.busy(sid)
        if session.lease_owner != owner:
            session.lease_epoch += 1
        session.lease_owner = owner
        return session.lease_epoch

    def busy(self, sid: str) -> SessionBusyError:
        holder = self.sessions[sid].lease_owner
        return SessionBusyError("model", session_id=sid, holder=holder, retry_after=0.0)

    def claim(self, sid: str, owner: str) -> tuple[int, int | None, int, str | None]:
        """``claim_session``: only a free lease is taken, even from its own holder."""
        session = self.get(sid)
        if session.lease_owner is not None:
            raise self.busy(sid)
        session.lease_epoch += 1
        session.lease_owner = owner
        return (session.lease_epoch, session.pending_send, len(session.messages),
                session.system_prompt)

    def begin_send(self, sid: str, messages: list[Message], owner: str, source: str,
                   key: str | None) -> tuple[int | None, Send]:
        """``begin_send``: (epoch of the lease taken or None, the send opened or found)."""
        existing = self.get(sid).send_by_key(key)
        if existing is not None:
            return None, existing
        session = self.sessions[sid]
        if session.lease_owner is not None:
            raise self.busy(sid)
        if session.pending_send is not None:
            raise SendPendingError("model", session_id=sid, send_index=session.pending_send)
        session.lease_epoch += 1
        session.lease_owner = owner
        return session.lease_epoch, self._open_send(session, messages, source, key)

    def renew(self, sid: str, owner: str, epoch: int) -> None:
        session = self.fence(sid, epoch)
        if session.lease_owner != owner:
            raise LeaseLostError("model", session_id=sid, epoch=epoch)

    def release(self, sid: str, owner: str, epoch: int) -> bool:
        session = self.sessions.get(sid)
        if session is None or session.lease_owner != owner or session.lease_epoch != epoch:
            return False
        session.lease_owner = None
        return True

    def start_send(self, sid: str, messages: list[Message], epoch: int | None, source: str,
                   key: str | None) -> Send:
        existing = self.get(sid).send_by_key(key)
        if existing is not None:
            return existing
        session = self.fence(sid, epoch)
        if session.pending_send is not None:
            raise SendPendingError("model", session_id=sid, send_index=session.pending_send)
        return self._open_send(session, messages, source, key)

    @staticmethod
    def _open_send(session: Session, messages: list[Message], source: str,
                   key: str | None) -> Send:
        send = Send(len(session.sends), source, key, len(session.messages))
        session.sends.append(send)
        session.pending_send = send.index
        session.messages.extend(Message(send.index, m.role, m.body) for m in messages)
        return send

    def _pending(self, sid: str, index: int, epoch: int | None,
                 messages: list[Message]) -> Session:
        session = self.fence(sid, epoch)
        if session.pending_send != index:
            raise InvalidArgumentError("model")
        session.messages.extend(Message(index, m.role, m.body) for m in messages)
        return session

    def finish_send(self, sid: str, index: int, messages: list[Message], epoch: int | None,
                    release: bool, outcome: dict[str, Any]) -> Send:
        """With ``release``, ``epoch`` is the released lease's and the lease is dropped."""
        session = self._pending(sid, index, epoch, messages)
        session.pending_send = None
        if release:
            session.lease_owner = None
        send = session.sends[index]
        send.status, send.stop_reason = outcome["status"], outcome["stop_reason"]
        send.rounds, send.usage = outcome["rounds"], exact_json(outcome["usage"])
        send.error = None if outcome["error"] is None else exact_json(outcome["error"])
        return send

    def pause_send(self, sid: str, index: int, messages: list[Message], epoch: int,
                   error: dict[str, Any]) -> int:
        first = len(self.get(sid).messages)
        session = self._pending(sid, index, epoch, messages)
        session.lease_owner = None
        session.sends[index].error = exact_json(error)
        return first

    def delete(self, sid: str) -> None:
        self.get(sid)
        del self.sessions[sid]

    def snapshot(self, sid: str) -> Session:
        return copy.deepcopy(self.get(sid))

    def restore(self, sid: str, snapshot: Session, replace: bool) -> None:
        replaced = self.sessions.get(sid)
        if replaced is not None and not replace:
            raise SessionExistsError("model", session_id=sid)
        restored = copy.deepcopy(snapshot)
        restored.lease_owner = None  # lease ownership is runtime state: not exported
        restored.incarnation = None
        if replaced is not None:
            # Never backwards: a writer fenced out before the import stays out.
            restored.lease_epoch = max(restored.lease_epoch, replaced.lease_epoch + 1)
        self.sessions[sid] = restored


def predict(action: Any, *args: Any) -> tuple[Any, type[PowerLoopError] | None]:
    """Run a model action: its result and no error, or no result and the error's class."""
    try:
        return action(*args), None
    except PowerLoopError as exc:
        return None, type(exc)


def check_message(record: MessageRecord, sid: str, seq: int, expected: Message) -> None:
    assert record.session_id == sid
    assert record.seq == seq
    assert (record.send_index, record.role, exact_json(record.body)) == (
        expected.send_index, expected.role, expected.body)


def check_send(record: SendRecord, sid: str, expected: Send) -> None:
    got = (record.session_id, record.send_index, record.status, record.source,
           record.request_key, record.first_seq, record.stop_reason, record.rounds,
           exact_json(record.usage), None if record.error is None else exact_json(record.error))
    want = (sid, expected.index, expected.status, expected.source, expected.request_key,
            expected.first_seq, expected.stop_reason, expected.rounds, expected.usage,
            expected.error)
    assert got == want
    assert (record.finished_at is None) == (expected.status == "pending")


def check_session(record: SessionRecord, sid: str, expected: Session) -> None:
    got = (record.id, record.parent_id, record.system_prompt, exact_json(record.metadata),
           record.next_seq, record.send_count, record.pending_send, record.lease_owner,
           record.lease_epoch, record.lease_expires_at is None)
    want = (sid, None, expected.system_prompt, expected.metadata, len(expected.messages),
            len(expected.sends), expected.pending_send, expected.lease_owner,
            expected.lease_epoch, expected.lease_owner is None)
    assert got == want
