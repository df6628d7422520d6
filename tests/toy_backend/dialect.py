"""The toy backend's SQL: every statement written out here, none inherited."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import ClassVar

from power_loop.store import ColumnType, CommitOutcome, Dialect, ErrorKind

_TYPES = {
    ColumnType.ID: "TEXT",
    ColumnType.NAME: "TEXT",
    ColumnType.INT: "INTEGER",
    ColumnType.BIGINT: "INTEGER",
    ColumnType.TIMESTAMP: "INTEGER",
    ColumnType.TEXT: "TEXT",
    ColumnType.JSON: "TEXT",
}


class ToySQLiteDialect(Dialect):
    """SQLite's engine, named ``toysqlite``: one writer, ``RETURNING``, no row locks."""

    name: ClassVar[str] = "toysqlite"
    paramstyle: ClassVar[str] = "qmark"
    supports_update_returning: ClassVar[bool] = True
    supports_row_locks: ClassVar[bool] = False
    supports_skip_locked: ClassVar[bool] = False
    transactional_ddl: ClassVar[bool] = True
    inline_indexes: ClassVar[bool] = False
    max_identifier_length: ClassVar[int] = 128
    # The SQLite adapter defines pl_now_us() on each connection (microseconds, UTC).
    now_us: ClassVar[str] = "pl_now_us()"

    @property
    def ddl_now_us(self) -> str:
        return "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"

    def column_type(self, kind: ColumnType) -> str:
        return _TYPES[kind]

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str],
        expressions: Mapping[str, str] | None = None, source: str | None = None,
    ) -> str:
        q = self.quote
        marks = ", ".join((expressions or {}).get(c, "?") for c in columns)
        rows = source if source is not None else f"VALUES ({marks})"
        head = (f"INSERT INTO {q(table)} ({', '.join(q(c) for c in columns)}) "
                f"{rows} ON CONFLICT ({', '.join(q(c) for c in key)}) DO ")
        if not update:
            return head + "NOTHING"
        return head + "UPDATE SET " + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in update)

    def create_index(self, name: str, table: str, columns: Sequence[str], unique: bool) -> str:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        cols = ", ".join(self.quote(c) for c in columns)
        return f"CREATE {kind} IF NOT EXISTS {self.quote(name)} ON {self.quote(table)} ({cols})"

    def migration_lock(self, key: int) -> tuple[str | None, str | None]:
        return None, None  # BEGIN IMMEDIATE holds the file's write lock

    def table_exists(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    def column_exists(self) -> str:
        return "SELECT 1 FROM pragma_table_info(?) WHERE name = ?"

    def index_exists(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?"

    def vacuum(self, tables: Sequence[str]) -> list[str]:
        return ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA optimize"]

    def classify_error(self, exc: BaseException) -> ErrorKind:
        if not isinstance(exc, sqlite3.Error):
            return ErrorKind.FATAL
        primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        return {5: ErrorKind.RETRYABLE, 6: ErrorKind.RETRYABLE, 19: ErrorKind.CONFLICT,
                13: ErrorKind.STORAGE_FULL, 10: ErrorKind.CONNECTION,
                14: ErrorKind.CONNECTION}.get(primary, ErrorKind.FATAL)

    def commit_outcome(self, exc: BaseException) -> CommitOutcome:
        # An answer from the library (busy, a constraint) rolled back; an I/O error or a
        # closed connection may have left the commit done.
        primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if isinstance(exc, sqlite3.OperationalError | sqlite3.IntegrityError) \
                and primary not in (0, 10, 14, 26):
            return CommitOutcome.REJECTED
        return CommitOutcome.IN_DOUBT
