"""power_loop: durable LLM agent loops embedded in your application.

Every conversation lives in a SQL store (SQLite, PostgreSQL or MySQL); the objects you
hold are thin handles that rebuild what they need from it, so any process that can reach
the database can carry a conversation on.
"""

from power_loop.errors import (
    ConfigurationError,
    ConnectionLostError,
    IntegrityConflictError,
    InvalidArgumentError,
    InvalidDSNError,
    InvalidIdentifierError,
    LeaseLostError,
    MissingDriverError,
    PowerLoopError,
    SchemaMissingError,
    SchemaVersionError,
    SendPendingError,
    SessionBusyError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    StorageFullError,
    StoreError,
    TransientStoreError,
)
from power_loop.store import (
    ConnectOptions,
    Lease,
    MessageRecord,
    NewMessage,
    SchemaPolicy,
    SendRecord,
    SessionRecord,
    Store,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConnectOptions",
    "ConnectionLostError",
    "IntegrityConflictError",
    "InvalidArgumentError",
    "InvalidDSNError",
    "InvalidIdentifierError",
    "Lease",
    "LeaseLostError",
    "MessageRecord",
    "MissingDriverError",
    "NewMessage",
    "PowerLoopError",
    "SchemaMissingError",
    "SchemaPolicy",
    "SchemaVersionError",
    "SendPendingError",
    "SendRecord",
    "SessionBusyError",
    "SessionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionRecord",
    "StorageFullError",
    "Store",
    "StoreError",
    "TransientStoreError",
    "open_store",
]

STABLE_API: frozenset[str] = frozenset(__all__)
"""The names whose meaning and signature follow semantic versioning."""
