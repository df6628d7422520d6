"""The store: one schema, three real backends, behind a small ``Database``/``Dialect`` port.

Layout: ``port.py`` (the port and the dialect base), ``schema.py`` and ``migrations.py``
(tables, DDL, versions), ``store.py`` (the operations), ``transfer.py`` (export and
import), and a folder per backend holding its dialect beside its driver adapter.
"""

from power_loop.store.dsn import ConnectOptions, redact_dsn
from power_loop.store.migrations import LATEST_VERSION, SchemaPolicy, render_ddl
from power_loop.store.port import ColumnType, Connection, Database, Dialect, ErrorKind
from power_loop.store.records import Lease, MessageRecord, NewMessage, SendRecord, SessionRecord
from power_loop.store.store import Store, open_store
from power_loop.store.window_cache import CacheStats, WindowCache

__all__ = [
    "LATEST_VERSION",
    "CacheStats",
    "ColumnType",
    "ConnectOptions",
    "Connection",
    "Database",
    "Dialect",
    "ErrorKind",
    "Lease",
    "MessageRecord",
    "NewMessage",
    "SchemaPolicy",
    "SendRecord",
    "SessionRecord",
    "Store",
    "WindowCache",
    "open_store",
    "redact_dsn",
    "render_ddl",
]
