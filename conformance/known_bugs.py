"""Bugs the conformance suite has found and not yet seen fixed, one reason per bug.

Tests that reveal them are kept and marked ``xfail(strict=True)``: when a fix lands they
pass, the strict mark turns that into a failure, and the mark is removed. Where a bug
shows on some backends only, the test applies the mark at run time with
:func:`xfail_if`.
"""

from __future__ import annotations

import pytest

LONE_SURROGATE_CONTENT = (
    "BUG: a lone surrogate inside stored JSON text (message body, system_prompt, metadata, "
    "usage, error) is not rejected with InvalidArgumentError on postgresql (asyncpg "
    "DataError becomes StoreError) nor, for U+DC80..U+DCFF, on mysql (aiomysql encodes "
    "queries with 'surrogateescape', the server refuses the raw byte with error 1366, "
    "a StoreError); only sqlite raises InvalidArgumentError")

PAUSE_SEND_UNCHECKED_ID = (
    "BUG: pause_send never calls check_id(session_id): a NUL is a StoreError on "
    "postgresql and SessionNotFoundError elsewhere; '' and 201 characters are "
    "SessionNotFoundError instead of InvalidArgumentError")

IMPORT_NULL_JSON_COLUMN = (
    "BUG: import_session writes JSON null into a NOT NULL JSON column as SQL NULL "
    "(transfer._to_db skips dump_json for None), so a session created without a "
    "system_prompt exports fine but cannot be imported (IntegrityConflictError on "
    "sqlite/postgresql, StoreError on mysql)")

READ_OF_MISSING_SESSION = (
    "BUG: read_messages and list_sends return [] for a session that does not exist "
    "instead of raising SessionNotFoundError, as next_seq and get_session do")

GET_SEND_OF_MISSING_SESSION = (
    "BUG: get_send on a session that does not exist raises InvalidArgumentError "
    "('has no send #0'), not SessionNotFoundError")

READ_LIMIT_UNCHECKED = (
    "BUG: read_messages does not validate limit: -1 means 'no limit' on sqlite, a syntax "
    "error (StoreError) on mysql and a StoreError on postgresql")

TTL_UNBOUNDED = (
    "BUG: core.ttl_us has no upper bound: ttl=inf raises a raw OverflowError, ttl=1e12 "
    "passes the database and then overflows datetime in from_us (OverflowError), and "
    "ttl=1e20 overflows BIGINT (StoreError); none is InvalidArgumentError")

IMPORT_ROWS_UNCHECKED = (
    "BUG: import_session checks row shapes but not their values: wrong types, NULLs, "
    "duplicate keys, seq gaps and invalid tokens are stored as-is or fail in the driver "
    "with a backend-specific StoreError/IntegrityConflictError, never InvalidArgumentError")

VERIFY_DDL_NOT_RUNNABLE = (
    "BUG: when the version table is current but a table is missing, the DDL carried by "
    "SchemaMissingError is render_ddl(dialect, prefix) from version 0, which re-inserts "
    "the existing schema_version row and fails on its primary key (on mysql it fails "
    "even earlier, see MYSQL_NOTES_AS_WARNINGS)")

EXTEND_RELEASED_LEASE = (
    "BUG: append_messages(epoch=, extend_lease=) after release_lease still matches the "
    "epoch and sets lease_expires_at on a lease whose owner is NULL, leaving a session "
    "that reports no holder but an expiry (SessionRecord promises None when released)")

MYSQL_NOTES_AS_WARNINGS = (
    "BUG: on mysql, re-running the idempotent migration (CREATE TABLE IF NOT EXISTS on a "
    "table that exists, e.g. after one table was dropped) makes the server emit note "
    "1050, which aiomysql re-raises as a Python Warning; under warnings-as-errors (this "
    "repository's pytest config) the adapter turns it into StoreError and AUTO_CREATE fails")


def xfail_if(request: pytest.FixtureRequest, condition: bool, reason: str,
             raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
             ) -> None:
    """Mark the running test as a strict expected failure when ``condition`` holds.

    ``raises`` pins how it fails, so a test that breaks for another reason still fails.
    """
    if condition:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))

SQLITE_FAILED_OPEN_THREAD = (
    "BUG (not marked: its symptom lands in a later test at random): when aiosqlite fails "
    "to open the file, power_loop.store.sqlite.driver._open drops the connection without "
    "waiting for its worker thread; the thread later calls back into a closed event loop "
    "and dies with 'RuntimeError: Event loop is closed'")
