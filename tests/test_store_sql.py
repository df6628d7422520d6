"""The SQL the store really sends respects its dialect's capability flags.

A recording :class:`Database` wraps the real one (every call goes through to the real
server) and keeps each statement; a workload over the public store API then must not
use what the dialect says the engine lacks, e.g. ``RETURNING`` on MySQL/MariaDB.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from power_loop import NewMessage, Store
from power_loop.store import Connection, Database
from power_loop.store.port import Row


class RecordingConnection:
    """Forwards to a real connection, noting each statement."""

    def __init__(self, conn: Connection, log: list[str]) -> None:
        self._conn = conn
        self._log = log

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._log.append(sql)
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._log.append(sql)
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._log.append(sql)
        return await self._conn.fetch(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._log.append(sql)
        return await self._conn.fetchone(sql, params)


class RecordingDatabase:
    """A :class:`Database` over a real one; ``log`` holds every statement sent."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.dialect = db.dialect
        self.log: list[str] = []

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Connection]:
        async with self._db.transaction(write=write) as conn:
            yield RecordingConnection(conn, self.log)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        async with self._db.autocommit() as conn:
            yield RecordingConnection(conn, self.log)

    async def close(self) -> None:
        await self._db.close()


async def _workload(store: Store) -> None:
    await store.create_session("w", system_prompt="p", metadata={"k": 1})
    await store.append_messages("w", [NewMessage(0, "user", {"text": "a"}),
                                      NewMessage(0, "assistant", {"text": "b"})])
    send = await store.start_send("w", [NewMessage(0, "user", {"text": "c"})],
                                  request_key="key-1")
    await store.finish_send("w", send.send_index, [NewMessage(0, "assistant", {"text": "d"})],
                            stop_reason="end_turn", rounds=1, usage={"output_tokens": 1})
    lease = await store.acquire_lease("w", "worker-1", ttl=30)
    lease = await store.renew_lease(lease, ttl=30)
    await store.append_messages("w", [NewMessage(1, "user", {"text": "e"})], epoch=lease.epoch)
    await store.release_lease(lease)
    await store.get_session("w")
    await store.list_sessions(limit=10)
    await store.read_messages("w", from_seq=1, limit=2)
    await store.read_messages("w")
    await store.next_seq("w")
    await store.list_sends("w")
    await store.get_send("w", send.send_index)
    lines = [line async for line in store.export_session("w")]
    await store.import_session(lines, replace=True)
    await store.create_session("old")
    await store.prune(older_than=datetime.now(UTC) - timedelta(days=1))
    await store.delete_session("old")
    await store.vacuum()


async def test_store_sql_respects_the_dialects_flags(store: Store) -> None:
    recording = RecordingDatabase(store._database)
    # Not closed here: the store fixture owns (and closes) the real database.
    await _workload(Store(recording, store.table_prefix))
    dialect = store._database.dialect
    sql = [s.upper() for s in recording.log]
    assert len(sql) > 20

    def absent(pattern: str) -> None:
        offending = [s for s in sql if re.search(pattern, s)]
        assert not offending, f"{dialect.name} was sent {pattern!r}: {offending[0]}"

    if not dialect.supports_update_returning:
        absent(r"\bRETURNING\b")
    if not dialect.supports_row_locks:
        absent(r"\bFOR UPDATE\b")
    if not dialect.supports_skip_locked:
        absent(r"\bSKIP LOCKED\b")
    if dialect.inline_indexes:
        absent(r"\bCREATE (UNIQUE )?INDEX\b")
    absent(r"\{NOW\}")  # every clock placeholder was rendered
    if dialect.paramstyle == "qmark":
        absent(r"%S|\$1")
    elif dialect.paramstyle == "numeric":
        absent(r"\?|%S")
    else:
        absent(r"\?|\$1")
