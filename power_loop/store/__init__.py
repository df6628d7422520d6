"""The store: one schema, three real backends, behind a small ``Database``/``Dialect`` port.

Layout: ``port.py`` (the port and the dialect base), ``schema.py`` and ``migrations.py``
(tables, DDL, versions), ``store.py`` (the operations), ``core.py`` (transactions and
honest retries) with ``settle.py`` (the reads that settle a commit in doubt),
``timer_ops.py`` (timers) and ``claims.py`` (stranded work), ``transfer.py`` (export and
import), ``registry.py`` (which backends exist; third parties register theirs), and a
folder per backend holding its dialect beside its driver adapter.
"""

from power_loop.store.dsn import ConnectOptions, ParsedDSN, redact_dsn
from power_loop.store.migrations import LATEST_VERSION, SchemaPolicy, render_ddl
from power_loop.store.port import (
    ColumnType,
    CommitOutcome,
    Connection,
    Database,
    Dialect,
    ErrorKind,
    create_index_if_not_exists,
    insert_on_conflict,
    translate_error,
)
from power_loop.store.records import Lease, MessageRecord, NewMessage, SendRecord, SessionRecord
from power_loop.store.registry import StoreBackend, register_backend
from power_loop.store.store import Store, open_store
from power_loop.store.window_cache import CacheStats, WindowCache

__all__ = [
    "LATEST_VERSION",
    "CacheStats",
    "ColumnType",
    "CommitOutcome",
    "ConnectOptions",
    "Connection",
    "Database",
    "Dialect",
    "ErrorKind",
    "Lease",
    "MessageRecord",
    "NewMessage",
    "ParsedDSN",
    "SchemaPolicy",
    "SendRecord",
    "SessionRecord",
    "Store",
    "StoreBackend",
    "WindowCache",
    "create_index_if_not_exists",
    "insert_on_conflict",
    "open_store",
    "redact_dsn",
    "register_backend",
    "render_ddl",
    "translate_error",
]
