"""Bugs the conformance suite has found and not yet seen fixed, one reason per bug.

Tests that reveal them are kept and marked ``xfail(strict=True)``, pinned to how they
fail (``raises=``): when a fix lands they pass, the strict mark turns that into a
failure, and the mark is removed. (A bug seen on some backends only is marked at run
time, with ``request.applymarker``, on those backends.)
"""

from __future__ import annotations

SURROGATE_PAIR_MERGED = (
    "BUG: lone surrogates in JSON content are kept (records.dump_json escapes them as "
    "\\uXXXX), but a high surrogate followed by a low one is escaped as a surrogate pair, "
    "which JSON decoding turns into the one astral character it encodes: the str "
    "'\\ud83d\\ude00' (two code points) is read back as '\\U0001f600' (one), on every "
    "backend and through export/import")

EXPORT_NOT_UTF8 = (
    "BUG: export_session writes its lines with ensure_ascii=False and no fallback, so "
    "content holding a lone surrogate (kept by the store since the surrogate policy "
    "change) yields lines that cannot be encoded as UTF-8; `power-loop sessions export` "
    "then dies with UnicodeEncodeError (an internal error) half-way through its output")

IMPORT_STATE_UNCHECKED = (
    "BUG: import_session checks each value's column type and the seq/send-index/"
    "pending_send/request_key invariants, but not the send states or JSON shapes the "
    "store itself never writes: a pending send that pending_send does not name, two "
    "pending sends, an unknown send status, a message body or metadata that is not an "
    "object, a non-string system_prompt; all are stored as they are")

NON_STRING_KEYS = (
    "BUG: records.dump_json lets json.dumps turn non-string object keys into strings, so "
    "{1: 'a', None: 'b', 2.5: 'c'} in a message body, metadata or usage is stored and "
    "read back as {'1': 'a', 'null': 'b', '2.5': 'c'} instead of being refused with "
    "InvalidArgumentError")

METADATA_NOT_CHECKED = (
    "BUG: create_session converts metadata with dict(metadata or {}) unchecked: a list of "
    "numbers raises a raw TypeError, a string a raw ValueError (not InvalidArgumentError), "
    "and a list of pairs is silently stored as an object")

