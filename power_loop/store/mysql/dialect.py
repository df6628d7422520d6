"""MySQL 8 / MariaDB 10.11 SQL flavour (no driver import: DDL prints without aiomysql).

Every statement here runs on both engines: no row alias in upserts (MariaDB lacks it),
no ``UPDATE ... RETURNING`` (neither has it), no ``CREATE INDEX IF NOT EXISTS``
(MySQL lacks it; indexes are declared inside ``CREATE TABLE IF NOT EXISTS`` instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from power_loop.store.port import ColumnType, CommitOutcome, Dialect, ErrorKind

_TYPES = {
    # VARBINARY, not VARCHAR: utf8mb4_bin pads spaces on MariaDB, so 'a' would equal
    # 'a '. Bytes compare exactly; 800 bytes hold 200 four-byte characters.
    ColumnType.ID: "VARBINARY(800)",
    ColumnType.NAME: "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
    ColumnType.INT: "INT",
    ColumnType.BIGINT: "BIGINT",
    ColumnType.TIMESTAMP: "BIGINT",
    ColumnType.TEXT: "LONGTEXT",
    ColumnType.JSON: "LONGTEXT",
}

_RETRYABLE = {1205, 1213, 1614, 3572}  # lock wait timeout, deadlock, rollback, NOWAIT
_CONFLICT = {1022, 1048, 1062, 1169, 1557, 1586, 1451, 1452}  # 1048: NOT NULL
_STORAGE_FULL = {1021, 1114, 3, 1030}
# 1044/1045/1698: access denied (wrong user or password): the connection cannot be made.
_CONNECTION = {1040, 1044, 1045, 1053, 1698, 1927, 2002, 2003, 2006, 2013, 2014, 2055, 4031}


class MySQLDialect(Dialect):
    """MySQL 8.0+ and MariaDB 10.6+ with InnoDB: row locks and ``SKIP LOCKED``."""

    name: ClassVar[str] = "mysql"
    paramstyle: ClassVar[str] = "format"
    supports_update_returning: ClassVar[bool] = False
    supports_multi_statements: ClassVar[bool] = True
    supports_row_locks: ClassVar[bool] = True
    supports_skip_locked: ClassVar[bool] = True
    transactional_ddl: ClassVar[bool] = False
    inline_indexes: ClassVar[bool] = True
    max_identifier_length: ClassVar[int] = 64
    # Sessions run with time_zone '+00:00', so NOW(6) round-trips exactly through UNIX_TIMESTAMP.
    now_us: ClassVar[str] = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"
    table_options: ClassVar[str] = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

    def quote(self, identifier: str) -> str:
        return f"`{identifier}`"

    def column_type(self, kind: ColumnType) -> str:
        return _TYPES[kind]

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str],
        expressions: Mapping[str, str] | None = None, source: str | None = None,
    ) -> str:
        cols = ", ".join(self.quote(c) for c in columns)
        marks = ", ".join((expressions or {}).get(c, "?") for c in columns)
        rows = source if source is not None else f"VALUES ({marks})"
        # VALUES(col) is accepted by both engines (MySQL 8 deprecates it in favour of a
        # row alias that MariaDB does not parse); a self-assignment means "do nothing".
        if update:
            sets = ", ".join(f"{self.quote(c)} = VALUES({self.quote(c)})" for c in update)
        else:
            sets = f"{self.quote(key[0])} = {self.quote(key[0])}"
        return (f"INSERT INTO {self.quote(table)} ({cols}) {rows} "
                f"ON DUPLICATE KEY UPDATE {sets}")

    def create_index(self, name: str, table: str, columns: Sequence[str], unique: bool) -> str:
        # MySQL has no CREATE INDEX IF NOT EXISTS: with inline_indexes, the schema declares
        # indexes in CREATE TABLE and a migration checks index_exists() before this.
        cols = ", ".join(self.quote(c) for c in columns)
        kind = "UNIQUE INDEX" if unique else "INDEX"
        return f"CREATE {kind} {self.quote(name)} ON {self.quote(table)} ({cols})"

    def migration_lock(self, key: int) -> tuple[str | None, str | None]:
        # DDL commits implicitly here, so a session-level named lock spans the migration.
        name = f"power_loop_migrate_{int(key)}"
        return f"SELECT GET_LOCK('{name}', 120)", f"SELECT RELEASE_LOCK('{name}')"

    def table_exists(self) -> str:
        return ("SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = ?")

    def column_exists(self) -> str:
        return ("SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND table_name = ? AND column_name = ?")

    def index_exists(self) -> str:
        return ("SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
                "AND table_name = ? AND index_name = ? LIMIT 1")

    def vacuum(self, tables: Sequence[str]) -> list[str]:
        quoted = ", ".join(self.quote(t) for t in tables)
        return [f"OPTIMIZE TABLE {quoted}", f"ANALYZE TABLE {quoted}"]

    def commit_outcome(self, exc: BaseException) -> CommitOutcome:
        # Codes under 2000 are the server's answers (it rolled back: deadlock, lock wait
        # timeout, constraint), except those that report the connection going away
        # (killed, shutting down); 2000 and up are the client's (lost connection, gone
        # away), and a timeout or socket error never got an answer.
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code is not None and code < 2000 and code not in _CONNECTION:
            return CommitOutcome.REJECTED
        return CommitOutcome.IN_DOUBT

    def classify_error(self, exc: BaseException) -> ErrorKind:
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code is not None:
            if code in _RETRYABLE:
                return ErrorKind.RETRYABLE
            if code in _CONFLICT:
                return ErrorKind.CONFLICT
            if code in _STORAGE_FULL:
                return ErrorKind.STORAGE_FULL
            if code in _CONNECTION or 2000 <= code < 3000:
                return ErrorKind.CONNECTION
            return ErrorKind.FATAL
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
            return ErrorKind.CONNECTION
        return ErrorKind.FATAL
