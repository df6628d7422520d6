"""SQLite's SQL flavour (no driver import: DDL prints without opening a connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import ClassVar

from power_loop.store.port import (
    ColumnType,
    CommitOutcome,
    Dialect,
    ErrorKind,
    create_index_if_not_exists,
    insert_on_conflict,
)

_TYPES = {
    ColumnType.ID: "TEXT",
    ColumnType.NAME: "TEXT",
    ColumnType.INT: "INTEGER",
    ColumnType.BIGINT: "INTEGER",
    ColumnType.TIMESTAMP: "INTEGER",
    ColumnType.TEXT: "TEXT",
    ColumnType.JSON: "TEXT",
}

# Primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _IOERR, _FULL, _CANTOPEN, _CONSTRAINT, _NOTADB = 5, 6, 10, 13, 14, 19, 26


class SQLiteDialect(Dialect):
    """SQLite 3.35+ (``RETURNING``); one writer at a time, so no row locks are needed."""

    name: ClassVar[str] = "sqlite"
    paramstyle: ClassVar[str] = "qmark"
    supports_update_returning: ClassVar[bool] = True
    supports_row_locks: ClassVar[bool] = False
    supports_skip_locked: ClassVar[bool] = False
    transactional_ddl: ClassVar[bool] = True
    max_identifier_length: ClassVar[int] = 128
    # SQLite's own clock, julianday('now'), counts whole milliseconds: sessions created in
    # the same millisecond would tie. Each power_loop connection defines pl_now_us(), the
    # host's clock in microseconds, read once per statement (the driver's _Clock).
    now_us: ClassVar[str] = "pl_now_us()"

    @property
    def ddl_now_us(self) -> str:
        # The DDL script runs in any SQLite tool; the epoch is Julian day 2440587.5.
        return "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"

    def column_type(self, kind: ColumnType) -> str:
        return _TYPES[kind]

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str],
        expressions: Mapping[str, str] | None = None, source: str | None = None,
    ) -> str:
        return insert_on_conflict(self, table, columns, key, update, expressions, source)

    def create_index(self, name: str, table: str, columns: Sequence[str], unique: bool) -> str:
        return create_index_if_not_exists(self, name, table, columns, unique)

    def migration_lock(self, key: int) -> tuple[str | None, str | None]:
        # BEGIN IMMEDIATE takes the file's write lock: migrations are serialized already.
        return None, None

    def table_exists(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    def column_exists(self) -> str:
        return "SELECT 1 FROM pragma_table_info(?) WHERE name = ?"

    def index_exists(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?"

    def vacuum(self, tables: Sequence[str]) -> list[str]:
        # VACUUM rewrites the file; the checkpoint then empties the WAL it grew into.
        return ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA optimize"]

    def commit_outcome(self, exc: BaseException) -> CommitOutcome:
        # SQLite answers in-process: a failed COMMIT left the transaction open (BUSY,
        # a constraint, a full disk) and the driver rolls it back, except where the
        # file itself failed mid-write or the connection is gone.
        if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.ProgrammingError):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF not in (_IOERR, _CANTOPEN, _NOTADB):
                return CommitOutcome.REJECTED
        return CommitOutcome.IN_DOUBT

    def classify_error(self, exc: BaseException) -> ErrorKind:
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc).lower():
            return ErrorKind.CONNECTION  # "Cannot operate on a closed database."
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None:
                return ErrorKind.FATAL
            primary = code & 0xFF
            if primary in (_BUSY, _LOCKED):
                return ErrorKind.RETRYABLE
            if primary == _CONSTRAINT:
                return ErrorKind.CONFLICT
            if primary == _FULL:
                return ErrorKind.STORAGE_FULL
            if primary in (_IOERR, _CANTOPEN, _NOTADB):
                return ErrorKind.CONNECTION
            return ErrorKind.FATAL
        return ErrorKind.FATAL
