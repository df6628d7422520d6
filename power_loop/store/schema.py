"""The tables, described once and rendered into each dialect's DDL.

Every table that holds a session's data names its ``session_column``: export, import,
delete and prune walk :func:`session_tables`, so a table added by a later migration is
carried by all of them without further code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from power_loop.errors import InvalidIdentifierError
from power_loop.store.port import ColumnType, Dialect

_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_PREFIX_LENGTH = 24
"""Long enough for any app's prefix; short enough that every index name fits in 63."""


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a plain identifier, else raise before any SQL runs."""
    if not isinstance(prefix, str) or (
        prefix and (not _PLAIN_IDENTIFIER.match(prefix) or len(prefix) > MAX_PREFIX_LENGTH)
    ):
        raise InvalidIdentifierError(
            f"table_prefix {prefix!r} is not a plain identifier: use letters, digits and "
            f"underscores, not starting with a digit, at most {MAX_PREFIX_LENGTH} characters "
            "(for example 'pl_' or 'myapp_pl_')")
    return prefix


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its portable type, whether it may be NULL, whether export carries it."""

    name: str
    type: ColumnType
    nullable: bool = False
    exported: bool = True
    fresh: bool = False
    """A new random value is written on every insert and import (never exported)."""
    since: int = 1
    """The schema version that added the column (later ones come by ALTER TABLE)."""
    default: int | str | None = None
    """The value existing rows (and older exports) get when the column is added."""


@dataclass(frozen=True, slots=True)
class Index:
    """A secondary index, named ``<prefix><table>_<suffix>``."""

    suffix: str
    columns: tuple[str, ...]
    unique: bool = False
    since: int = 1


@dataclass(frozen=True, slots=True)
class Table:
    """A table without its prefix.

    Attributes:
        session_column: The column holding the owning session's id, if rows belong to one
            session (the ``sessions`` table uses its own ``id``).
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[Index, ...] = ()
    session_column: str | None = None

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def exported_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.exported)


def _c(name: str, kind: ColumnType, *, null: bool = False, exported: bool = True,
       fresh: bool = False, since: int = 1, default: int | str | None = None) -> Column:
    return Column(name, kind, null, exported and not fresh, fresh, since, default)


ID, NAME, INT, BIGINT, TS, TEXT, JSON = (
    ColumnType.ID, ColumnType.NAME, ColumnType.INT, ColumnType.BIGINT,
    ColumnType.TIMESTAMP, ColumnType.TEXT, ColumnType.JSON)

SCHEMA_VERSION_TABLE = Table(
    "schema_version",
    (_c("version", INT), _c("description", NAME), _c("applied_at", TS)),
    primary_key=("version",),
)

SESSIONS = Table(
    "sessions",
    (
        _c("id", ID),
        _c("parent_id", ID, null=True),
        _c("created_at", TS),
        _c("updated_at", TS),
        _c("system_prompt", JSON),
        _c("metadata", JSON),
        # The next message seq and send index to hand out: contiguous by construction.
        _c("next_seq", BIGINT),
        _c("send_count", BIGINT),
        # The index of the send still in progress (NULL when idle): what workers resume.
        _c("pending_send", BIGINT, null=True),
        # The lease: who holds the session, until when (database clock), and the epoch
        # (fencing token) bumped at every new grant. Owner and expiry are runtime state,
        # not data: export leaves them out.
        _c("lease_owner", ID, null=True, exported=False),
        _c("lease_epoch", BIGINT),
        _c("lease_expires_at", TS, null=True, exported=False),
        # Which life of this id the row is: a session deleted and created again (or
        # replaced by an import) gets a new one, so caches keyed by id cannot mix them.
        _c("incarnation", ID, fresh=True),
        # Times a worker took up this session's unfinished send without finishing it;
        # past the worker's limit the session is parked (parked_at) and left alone.
        _c("resume_attempts", INT, since=3, default=0),
        _c("parked_at", TS, null=True, since=3),
        # Wait events (a wait opened, a wait decided) numbered so far: the session
        # feed's counter for them, bumped in the transaction that commits each.
        _c("wait_events", BIGINT, since=8, default=0),
    ),
    primary_key=("id",),
    indexes=(Index("created", ("created_at", "id")), Index("updated", ("updated_at",)),
             Index("parent", ("parent_id",)), Index("pending", ("pending_send",), since=3)),
    session_column="id",
)

MESSAGES = Table(
    "messages",
    (
        _c("session_id", ID),
        _c("seq", BIGINT),
        _c("send_index", BIGINT),
        _c("role", NAME),
        _c("body", JSON),
        _c("created_at", TS),
    ),
    primary_key=("session_id", "seq"),
    session_column="session_id",
)

SENDS = Table(
    "sends",
    (
        _c("session_id", ID),
        _c("send_index", BIGINT),
        _c("status", NAME),
        _c("source", NAME),
        _c("request_key", ID, null=True),
        _c("first_seq", BIGINT),
        _c("created_at", TS),
        _c("finished_at", TS, null=True),
        _c("stop_reason", NAME, null=True),
        _c("rounds", INT),
        _c("token_usage", JSON),
        _c("error", JSON, null=True),
    ),
    primary_key=("session_id", "send_index"),
    indexes=(Index("request_key", ("session_id", "request_key"), unique=True),),
    session_column="session_id",
)


PROJECTIONS = Table(
    "projections",
    (
        _c("session_id", ID),
        _c("send_index", BIGINT),
        _c("version", INT),
        # What the send asked, answered and used, as terse text: derived from the
        # message log and rebuildable from it at any time.
        _c("body", JSON),
        _c("created_at", TS),
    ),
    primary_key=("session_id", "send_index"),
    session_column="session_id",
)

FOLDS = Table(
    "folds",
    (
        _c("session_id", ID),
        _c("fold_index", BIGINT),
        # started -> done, or started -> failed; a fold left "started" by a crash, or
        # "failed", is simply done again.
        _c("status", NAME),
        _c("strategy", NAME),
        _c("first_send", BIGINT),
        _c("end_send", BIGINT),
        _c("end_seq", BIGINT),
        _c("summary", JSON),
        _c("notes_written", JSON),
        _c("token_usage", JSON),
        _c("created_at", TS),
        _c("finished_at", TS, null=True),
    ),
    primary_key=("session_id", "fold_index"),
    session_column="session_id",
)

NOTES = Table(
    "notes",
    (
        _c("session_id", ID),
        _c("note_id", BIGINT),
        _c("body", JSON),
        _c("created_at", TS),
        _c("updated_at", TS),
    ),
    primary_key=("session_id", "note_id"),
    session_column="session_id",
)


TIMERS = Table(
    "timers",
    (
        _c("timer_id", ID),
        _c("session_id", ID),
        _c("message", JSON),
        # scheduled -> done (one-shot fired) | cancelled | parked (kept failing)
        _c("status", NAME),
        _c("due_at", TS),
        _c("every_us", BIGINT, null=True),
        _c("missed", NAME),
        _c("fire_count", BIGINT),
        _c("attempts", INT),
        # The claim of the worker firing it: the same lease-with-epoch as sessions have.
        _c("claim_owner", ID, null=True, exported=False),
        _c("claim_epoch", BIGINT),
        _c("claim_expires_at", TS, null=True, exported=False),
        _c("last_error", JSON, null=True),
        _c("created_at", TS),
        _c("updated_at", TS),
        # What a fire does: deliver ``message`` to the session (``deliver``), or end an
        # unanswered wait (``expiry``: ``message`` holds the wait's id).
        _c("kind", NAME, since=4, default="deliver"),
    ),
    primary_key=("timer_id",),
    indexes=(Index("due", ("status", "due_at")), Index("session", ("session_id",))),
    session_column="session_id",
)

WAITS = Table(
    "waits",
    (
        _c("session_id", ID),
        # What is waited on: for a tool call, its call id.
        _c("wait_id", ID),
        _c("send_index", BIGINT),
        # approval | input | held (a call of the same round, held until the others are
        # decided)
        _c("kind", NAME),
        _c("tool_name", ID),
        _c("arguments", JSON),
        # waiting -> approved | rejected | answered | expired; approved and held calls
        # become executing (once, under the session lease) just before they run, and
        # done in the transaction that stores their result.
        _c("status", NAME),
        # The decision's words: a rejection's reason, an answer's text.
        _c("decision", JSON, null=True),
        _c("expires_at", TS, null=True),
        _c("created_at", TS),
        _c("decided_at", TS, null=True),
        # Where the session feed shows the wait's opening and its decision: the event's
        # number (sessions.wait_events before the bump) and the session's next_seq when
        # it was committed. NULL for a held call, and for waits older than version 8.
        _c("opened_event", BIGINT, null=True, since=8),
        _c("opened_seq", BIGINT, null=True, since=8),
        _c("decided_event", BIGINT, null=True, since=8),
        _c("decided_seq", BIGINT, null=True, since=8),
    ),
    primary_key=("session_id", "wait_id"),
    indexes=(Index("send", ("session_id", "send_index", "status")),),
    session_column="session_id",
)


SESSION_LINKS = Table(
    "session_links",
    (
        # The child: a session made by another session's send (a sub-agent; later, a
        # workflow leaf). Its id is derived from the link, so the link is made once.
        _c("session_id", ID),
        _c("parent_id", ID),
        _c("parent_send", BIGINT),
        # The parent's tool call id (or a workflow step path) that made the child.
        _c("parent_call", ID),
        _c("kind", NAME),
        # Which agent the child is: the loop that resumes it runs that agent's tools.
        _c("name", ID),
        _c("depth", INT),
        _c("created_at", TS),
    ),
    primary_key=("session_id",),
    indexes=(Index("parent", ("parent_id", "parent_send")),),
    session_column="session_id",
)


WORKFLOWS = Table(
    "workflows",
    (
        # The workflow's id is also the id of its session: its leaves are that
        # session's children (session_links), so a resume finds them by derived id.
        _c("workflow_id", ID),
        _c("spec", JSON),
        _c("spec_hash", NAME),
        _c("input", JSON),
        # running -> done | failed | cancelled
        _c("status", NAME),
        _c("output", JSON, null=True),
        _c("error", JSON, null=True),
        # The executor's lease, with the epoch every journal write is fenced by.
        _c("lease_owner", ID, null=True, exported=False),
        _c("lease_epoch", BIGINT),
        _c("lease_expires_at", TS, null=True, exported=False),
        _c("attempts", INT),
        _c("parked_at", TS, null=True),
        _c("created_at", TS),
        _c("updated_at", TS),
    ),
    primary_key=("workflow_id",),
    indexes=(Index("status", ("status", "updated_at")),),
    session_column="workflow_id",
)

WORKFLOW_STEPS = Table(
    "workflow_steps",
    (
        _c("workflow_id", ID),
        # The step's structural path (JSON pointer, with "@k" after a foreach item's
        # "do"): never the order in which steps ran.
        _c("path", ID),
        _c("kind", NAME),
        # running | waiting | sleeping -> done | failed
        _c("status", NAME),
        _c("output", JSON, null=True),
        _c("child_session", ID, null=True),
        # When a sleep ends or a wait times out (database clock, microseconds).
        _c("due_at", TS, null=True),
        _c("epoch", BIGINT),
        _c("created_at", TS),
        _c("updated_at", TS),
    ),
    primary_key=("workflow_id", "path"),
    session_column="workflow_id",
)

WORKFLOW_SIGNALS = Table(
    "workflow_signals",
    (
        _c("workflow_id", ID),
        _c("name", ID),
        _c("payload", JSON),
        _c("created_at", TS),
    ),
    primary_key=("workflow_id", "name"),
    session_column="workflow_id",
)


class TableNames:
    """Prefixed, quoted table names for one store, as attributes (``names.messages``)."""

    def __init__(self, dialect: Dialect, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)
        self._dialect = dialect

    def raw(self, table: Table | str) -> str:
        name = table if isinstance(table, str) else table.name
        return f"{self.prefix}{name}"

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._dialect.quote(f"{self.prefix}{name}")


def column_ddl(dialect: Dialect, column: Column) -> str:
    """A column's definition, as in ``CREATE TABLE`` and ``ALTER TABLE ... ADD COLUMN``."""
    text = f"{dialect.quote(column.name)} {dialect.column_type(column.type)}"
    if not column.nullable:
        text += " NOT NULL"
    if isinstance(column.default, str):  # a power_loop token: never needs escaping
        text += f" DEFAULT '{column.default}'"
    elif column.default is not None:
        text += f" DEFAULT {int(column.default)}"
    return text


def create_table(dialect: Dialect, prefix: str, table: Table) -> list[str]:
    """Idempotent DDL creating ``table`` (in its latest shape) and its indexes."""
    q = dialect.quote
    name = f"{prefix}{table.name}"
    lines = [column_ddl(dialect, c) for c in table.columns]
    lines.append(f"PRIMARY KEY ({', '.join(q(c) for c in table.primary_key)})")
    statements: list[str] = []
    for index in table.indexes:
        index_name = f"{name}_{index.suffix}"
        if dialect.inline_indexes:
            kind = "UNIQUE INDEX" if index.unique else "INDEX"
            lines.append(f"{kind} {q(index_name)} ({', '.join(q(c) for c in index.columns)})")
        else:
            statements.append(dialect.create_index(index_name, name, index.columns, index.unique))
    body = ",\n    ".join(lines)
    return [f"CREATE TABLE IF NOT EXISTS {q(name)} (\n    {body}\n){dialect.table_options}",
            *statements]


def drop_tables(dialect: Dialect, prefix: str, tables: Sequence[Table]) -> list[str]:
    """``DROP TABLE IF EXISTS`` for each table (tests and teardown only)."""
    return [f"DROP TABLE IF EXISTS {dialect.quote(prefix + t.name)}" for t in tables]
