"""What the store hands back: frozen records, timestamps as aware UTC datetimes.

In the database, timestamps are microseconds since the Unix epoch (a portable, exact
64-bit integer read from the database clock) and JSON is exact text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from power_loop.errors import InvalidArgumentError
from power_loop.llm._json import loads
from power_loop.store.port import ID_MAX_CHARS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def from_us(value: int) -> datetime:
    """Microseconds since the epoch to an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(0, 0, value)  # positional: a third faster than by keyword


def to_us(value: datetime) -> int:
    """An aware datetime to microseconds since the epoch (exact)."""
    if value.tzinfo is None:
        raise InvalidArgumentError(
            f"datetime {value!r} has no time zone; pass an aware datetime such as "
            "datetime.now(UTC)")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_CONTAINERS = (dict, list, tuple)


def _check_keys(value: Any) -> None:
    """Refuse object keys JSON would silently turn into strings (1 -> "1")."""
    # Exact types first (what the codec builds), subclasses through isinstance, as the
    # encoder itself treats them.
    kind = type(value)
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, dict)):
        for key, child in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise InvalidArgumentError(
                    f"JSON object keys must be strings, not {type(key).__name__} {key!r}")
            if type(child) in _SCALARS:
                continue
            if isinstance(child, _CONTAINERS):
                _check_keys(child)
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        for child in value:
            if type(child) not in _SCALARS and isinstance(child, _CONTAINERS):
                _check_keys(child)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _one_shot(sort_keys: bool) -> Callable[[Any], str]:
    """``JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode``
    without the set-up that method repeats on every call (a closure and a C encoder:
    about as long as encoding a message body, and a send encodes three). The C encoder
    is made once, without circular-reference markers: :func:`_check_keys` walks every
    container first, and meets a cycle there."""
    base = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                            sort_keys=sort_keys)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - an interpreter without the C accelerator
        return base.encode
    encode = make(None, base.default, json.encoder.encode_basestring, None,
                  base.key_separator, base.item_separator, sort_keys, False, False)
    join = "".join

    def one_shot(value: Any) -> str:
        return join(encode(value, 0))

    return one_shot


_ENCODE = _one_shot(False)
_ENCODE_SORTED = _one_shot(True)


def dump_json(value: Any, *, sort_keys: bool = False) -> str:
    """Encode JSON exactly as the store keeps it (UTF-8 text, compact, no NaN).

    Text that is not valid Unicode (a lone surrogate, as ``surrogateescape`` decoding
    produces) is kept too: such a document is written with ``\\uXXXX`` escapes, which
    decode back to the same string on every backend. (One normalization is unavoidable
    there: a high and a low surrogate written as two code points read back as the one
    character they encode.) Object keys must be strings.
    """
    try:
        _check_keys(value)
        text = (_ENCODE_SORTED if sort_keys else _ENCODE)(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"value cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgumentError("value cannot be stored as JSON: it nests too deeply "
                                   "(or contains itself)") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, ensure_ascii=True, separators=(",", ":"),
                              sort_keys=sort_keys)
    return text


def load_json(text: str) -> Any:
    """Decode stored JSON (with orjson, when installed: a cold send decodes every
    message of the window; whatever orjson refuses, json decodes as before)."""
    if text == "null":  # a session's system prompt, most often (each send reads it)
        return None
    return loads(text)


def check_id(value: object, what: str = "session_id") -> str:
    """Accept an identifier verbatim, or raise: 1-200 characters, valid text, no NUL."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}")
    if not value or len(value) > ID_MAX_CHARS:
        raise InvalidArgumentError(f"{what} must have 1 to {ID_MAX_CHARS} characters")
    if "\x00" in value:
        raise InvalidArgumentError(
            f"{what} contains a NUL character, which power_loop does not store in "
            "identifiers (message content keeps NUL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid Unicode text") from None
    return value


MAX_TTL = 366 * 86_400.0
"""The longest lease power_loop grants, in seconds (a year)."""


def check_count(value: object, what: str, *, allow_none: bool = False) -> int | None:
    """Accept a non-negative int that fits a BIGINT (``None`` if allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise InvalidArgumentError(f"{what} must be a non-negative integer, not {value!r}")
    return value


_GOOD_NAMES: set[str] = set()
"""Names seen to pass :func:`check_name` (the few a send writes, each several times a
send), so that each is matched once; bounded by :data:`_GOOD_NAMES_MAX`."""
_GOOD_NAMES_MAX = 256


def check_name(value: object, what: str) -> str:
    """Accept a short lowercase token (role, status, source)."""
    if type(value) is str and value in _GOOD_NAMES:
        return value
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidArgumentError(
            f"{what} {value!r} must be a lowercase token: a letter, then up to 31 "
            "letters, digits or underscores")
    if type(value) is str and len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(value)
    return value


@dataclass(frozen=True, slots=True)
class Lease:
    """A held session lease.

    Attributes:
        session_id: The leased session.
        owner: Who holds it (unique per holder: a process, a loop, a worker slot).
        epoch: The fencing token; writes carrying an older epoch are rejected.
        expires_at: When the lease lapses unless renewed (database clock).
    """

    session_id: str
    owner: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session's row.

    Attributes:
        next_seq: The seq the next message will get (= number of messages).
        send_count: Number of sends started (= index of the next send).
        pending_send: Index of the send in progress, or ``None`` when idle.
        lease_owner: Current or last lease holder, ``None`` when released.
        lease_epoch: Epoch of the latest lease granted (0: never leased).
        lease_expires_at: When the current lease lapses, ``None`` when released.
        incarnation: Which life of this id the row is: new when a session is created
            again under the same id or replaced by an import.
        resume_attempts: Times workers took up the unfinished send without finishing it.
        parked_at: When workers gave up on the session (``None``: not parked).
    """

    id: str
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    system_prompt: str | None
    metadata: Mapping[str, Any]
    next_seq: int
    send_count: int
    pending_send: int | None
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: datetime | None
    incarnation: str
    resume_attempts: int = 0
    parked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append: which send it belongs to, its role, its JSON body."""

    send_index: int
    role: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A stored message. ``seq`` is contiguous from 0 within its session."""

    session_id: str
    seq: int
    send_index: int
    role: str
    body: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One send's row: its status and, once finished, its outcome.

    Attributes:
        status: ``pending`` until it ends as ``done``, ``failed``, ``cancelled`` or
            ``aborted``.
        source: Who started it: ``user``, ``timer``...
        request_key: The caller's idempotency key, unique per session, if given.
        first_seq: Seq of its first message.
    """

    session_id: str
    send_index: int
    status: str
    source: str
    request_key: str | None
    first_seq: int
    created_at: datetime
    finished_at: datetime | None
    stop_reason: str | None
    rounds: int
    usage: Mapping[str, Any] = field(default_factory=dict)
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SendStart:
    """What :meth:`~power_loop.Store.begin_send` opened (or found).

    Attributes:
        lease: The session lease now held (``None`` when ``existing`` is set).
        send_index: The new send's index.
        first_seq: Seq of its first message (= the session's ``next_seq`` before it).
        system_prompt: The session's own system prompt.
        incarnation: The session row's incarnation (see :class:`SessionRecord`).
        metadata: The session's metadata.
        existing: With a ``request_key`` already used, that send; nothing was written.
    """

    lease: Lease | None
    send_index: int
    first_seq: int
    system_prompt: str | None
    incarnation: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    existing: SendRecord | None = None


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """A session taken by :meth:`~power_loop.Store.claim_session`.

    Attributes:
        lease: The lease now held.
        pending_send: Index of the unfinished send, or ``None`` when idle.
        next_seq: The session's next seq.
        system_prompt: The session's own system prompt.
        incarnation: The session row's incarnation (see :class:`SessionRecord`).
        metadata: The session's metadata.
    """

    lease: Lease
    pending_send: int | None
    next_seq: int
    system_prompt: str | None
    incarnation: str
    metadata: Mapping[str, Any]
