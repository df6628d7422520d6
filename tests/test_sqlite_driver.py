"""The SQLite adapter runs statements on the event loop's thread: a file that another
process holds the write lock of must be waited for without blocking the loop, up to
``busy_timeout``, and then fail with a typed, retryable error."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from power_loop import NewMessage, TransientStoreError, open_store


def _message(text: str) -> NewMessage:
    return NewMessage(0, "user", {"text": text})


@pytest.fixture
def locker(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the file (as another process would hold it)."""
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    yield conn
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.close()


async def test_a_write_waits_for_the_lock_without_blocking_the_loop(
        tmp_path: Path, locker: sqlite3.Connection) -> None:
    store = await open_store(str(tmp_path / "app.db"), busy_timeout=30)
    try:
        await store.create_session("s")
        locker.execute("BEGIN IMMEDIATE")  # the write lock, held elsewhere
        append = asyncio.create_task(store.append_messages("s", [_message("hello")]))
        for _ in range(20):  # the loop goes on while the append waits
            await asyncio.sleep(0.01)
            assert not append.done(), "the append got past a held write lock"
        locker.execute("COMMIT")
        assert await asyncio.wait_for(append, 30) == [0]
        assert [m.body["text"] for m in await store.read_messages("s")] == ["hello"]
    finally:
        await store.aclose()


async def test_opening_a_new_file_waits_for_a_write_lock_held_elsewhere(
        tmp_path: Path, locker: sqlite3.Connection) -> None:
    # A file still in rollback-journal mode, its write lock held by another process (as
    # when several processes boot on a new file at once): SQLite refuses the switch to
    # WAL at once, without waiting, so the opener must wait for the lock itself.
    locker.execute("CREATE TABLE other (x)")
    locker.execute("BEGIN IMMEDIATE")
    opening = asyncio.create_task(open_store(str(tmp_path / "app.db"), busy_timeout=30))
    for _ in range(20):  # it waits; it does not fail
        await asyncio.sleep(0.01)
        assert not opening.done() or opening.exception() is None, opening.exception()
    locker.execute("COMMIT")
    store = await asyncio.wait_for(opening, 30)
    try:
        await store.create_session("s")
        assert [s.id for s in await store.list_sessions()] == ["s"]
        fresh = sqlite3.connect(tmp_path / "app.db")
        try:
            assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            fresh.close()
    finally:
        await store.aclose()


async def test_a_lock_held_past_the_busy_timeout_is_a_transient_error(
        tmp_path: Path, locker: sqlite3.Connection) -> None:
    store = await open_store(str(tmp_path / "app.db"), busy_timeout=0.3)
    try:
        await store.create_session("s")
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientStoreError) as info:
            await store.append_messages("s", [_message("hello")])
        assert info.value.code == "store_transient"
        locker.execute("COMMIT")
        assert await store.read_messages("s") == []  # nothing half-written
        await store.append_messages("s", [_message("again")])  # usable afterwards
        assert [m.seq for m in await store.read_messages("s")] == [0]
    finally:
        await store.aclose()


async def test_rows_written_in_the_same_millisecond_have_distinct_times(
        tmp_path: Path) -> None:
    store = await open_store(str(tmp_path / "app.db"))
    try:
        for i in range(30):
            await store.create_session(f"s{i:02d}")
        created = [s.created_at for s in await store.list_sessions(limit=100)]
        assert len(set(created)) == len(created)  # microseconds, not milliseconds
    finally:
        await store.aclose()
