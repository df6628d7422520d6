"""PostgreSQL's SQL flavour (no driver import: DDL prints without asyncpg)."""

from __future__ import annotations

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
    ColumnType.ID: "VARCHAR(200)",
    ColumnType.NAME: "VARCHAR(64)",
    ColumnType.INT: "INTEGER",
    ColumnType.BIGINT: "BIGINT",
    ColumnType.TIMESTAMP: "BIGINT",
    ColumnType.TEXT: "TEXT",
    # Not JSONB: JSONB rejects \u0000 and rewrites key order, and we never query inside.
    ColumnType.JSON: "TEXT",
}

_RETRYABLE = {"40001", "40P01", "55P03", "57014"}
_CONNECTION_CLASSES = ("08", "28")  # connection exceptions; invalid authorization
_CONNECTION = {"57P01", "57P02", "57P03", "53300"}
_STORAGE_FULL = {"53100", "53400"}
_IN_DOUBT = {"57014", "57P01", "57P02", "57P03", "XX000"}
"""Answers that do not say whether a COMMIT landed (cancelled, shutting down, internal)."""


class PostgresDialect(Dialect):
    """PostgreSQL 12+: row locks, ``SKIP LOCKED``, transactional DDL, advisory locks."""

    name: ClassVar[str] = "postgresql"
    paramstyle: ClassVar[str] = "numeric"
    supports_update_returning: ClassVar[bool] = True
    supports_writable_cte: ClassVar[bool] = True
    supports_row_locks: ClassVar[bool] = True
    supports_skip_locked: ClassVar[bool] = True
    transactional_ddl: ClassVar[bool] = True
    max_identifier_length: ClassVar[int] = 63
    # statement_timestamp(), not now(): a long transaction must still see time pass.
    now_us: ClassVar[str] = "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000 AS BIGINT)"
    notify_sql: ClassVar[str | None] = "SELECT pg_notify(?, CAST(? - {now} AS TEXT))"

    def column_type(self, kind: ColumnType) -> str:
        return _TYPES[kind]

    def array_rows(self, alias: str, columns: Sequence[tuple[str, ColumnType]]) -> str:
        arrays = ", ".join(f"CAST(? AS {_TYPES[kind]}[])" for _, kind in columns)
        names = ", ".join(name for name, _ in columns)
        return f"unnest({arrays}) WITH ORDINALITY AS {alias}({names}, i)"

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str],
        expressions: Mapping[str, str] | None = None, source: str | None = None,
    ) -> str:
        return insert_on_conflict(self, table, columns, key, update, expressions, source)

    def create_index(self, name: str, table: str, columns: Sequence[str], unique: bool) -> str:
        return create_index_if_not_exists(self, name, table, columns, unique)

    def migration_lock(self, key: int) -> tuple[str | None, str | None]:
        # Transaction-scoped: released by the COMMIT that publishes the schema.
        return f"SELECT pg_advisory_xact_lock({int(key)})", None

    def feed_trigger(self, prefix: str, channel: str, *, waits: bool = False) -> list[str]:
        # A trigger, not a NOTIFY in each write: every writer (any version, any path,
        # one-statement writes included) wakes watchers at no extra round trip, and the
        # notification is delivered only if, and when, the transaction commits. NOTIFY
        # folds duplicates within a transaction, so a many-message write sends one.
        function, sessions = self.quote(f"{prefix}feed_notify"), self.quote(f"{prefix}sessions")
        literal = "'" + channel.replace("'", "''") + "'"
        # The body is an E'' string whose semicolons are written \073, so no statement
        # of the DDL script holds a ';' (tools split scripts on it).
        body = ("BEGIN PERFORM pg_notify(TG_ARGV[0], CASE TG_OP WHEN ''DELETE'' THEN "
                'OLD."id" ELSE NEW."id" END)\\073 RETURN NULL\\073 END')
        changed = ('OLD."next_seq" <> NEW."next_seq" OR OLD."send_count" <> NEW."send_count" '
                   'OR OLD."pending_send" IS DISTINCT FROM NEW."pending_send"')
        if waits:
            changed += ' OR OLD."wait_events" <> NEW."wait_events"'
        return [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
            f"AS E'{body}'",
            f"DROP TRIGGER IF EXISTS {self.quote(prefix + 'feed')} ON {sessions}",
            f"CREATE TRIGGER {self.quote(prefix + 'feed')} AFTER UPDATE ON {sessions} "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {function}({literal})",
            f"DROP TRIGGER IF EXISTS {self.quote(prefix + 'feed_gone')} ON {sessions}",
            f"CREATE TRIGGER {self.quote(prefix + 'feed_gone')} AFTER DELETE ON {sessions} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}({literal})",
        ]

    def drop_feed_trigger(self, prefix: str) -> list[str]:
        return [f"DROP FUNCTION IF EXISTS {self.quote(prefix + 'feed_notify')}() CASCADE"]

    # current_schema(): the first schema on the search_path, where CREATE TABLE put them.
    def table_exists(self) -> str:
        return ("SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name = ?")

    def column_exists(self) -> str:
        return ("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ? AND column_name = ?")

    def index_exists(self) -> str:
        return ("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = ? AND indexname = ?")

    def vacuum(self, tables: Sequence[str]) -> list[str]:
        return [f"VACUUM (ANALYZE) {self.quote(t)}" for t in tables]

    def commit_outcome(self, exc: BaseException) -> CommitOutcome:
        # The server's ERROR answer to a COMMIT (or to a one-statement write) means it
        # rolled back: serialization failures, deadlocks, constraints. A cancelled
        # statement (57014: statement_timeout, or asyncpg's cancel after
        # command_timeout) may have raced its own commit; a connection that broke, or a
        # server shutting down, never answered.
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state not in _IN_DOUBT \
                and not state.startswith(_CONNECTION_CLASSES):
            return CommitOutcome.REJECTED
        return CommitOutcome.IN_DOUBT

    def classify_error(self, exc: BaseException) -> ErrorKind:
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str):
            if state in _RETRYABLE:
                return ErrorKind.RETRYABLE
            if state.startswith("23"):
                return ErrorKind.CONFLICT
            if state in _STORAGE_FULL:
                return ErrorKind.STORAGE_FULL
            if state in _CONNECTION or state.startswith(_CONNECTION_CLASSES):
                return ErrorKind.CONNECTION
            return ErrorKind.FATAL
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
            return ErrorKind.CONNECTION
        if type(exc).__name__ in {"ConnectionDoesNotExistError", "InterfaceError",
                                  "InternalClientError"}:
            return ErrorKind.CONNECTION
        return ErrorKind.FATAL
