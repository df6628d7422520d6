"""DSN parsing and lazy backend loading.

The scheme picks the backend; its driver is imported only then, so an unused driver is
never loaded and a missing one raises :class:`~power_loop.errors.MissingDriverError`
naming the extra to install. Connection options come from the DSN's query string and
from keyword arguments (which win).

    app.db | sqlite:///relative.db | sqlite:////abs/path.db | :memory:
    postgresql://user:pass@host:5432/db?pool_max_size=20
    mysql://user:pass@host:3306/db?connect_timeout=5
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from power_loop.errors import InvalidDSNError, MissingDriverError

if TYPE_CHECKING:
    from power_loop.store.port import Database


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to connect; every field is settable in the DSN's query string too.

    Attributes:
        pool_min_size: Connections opened eagerly (PostgreSQL, MySQL).
        pool_max_size: Most connections open at once (PostgreSQL, MySQL).
        connect_timeout: Seconds to wait when opening a connection.
        command_timeout: Seconds one statement may run; ``None`` for no limit
            (PostgreSQL, MySQL).
        busy_timeout: Seconds a SQLite writer waits for another process's write lock.
        synchronous: SQLite ``synchronous`` pragma: ``normal`` (survives process
            crashes; the default with WAL) or ``full`` (also survives power loss).
        readers: SQLite reader connections serving reads beside the one writer.
    """

    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout: float = 10.0
    command_timeout: float | None = None
    busy_timeout: float = 30.0
    synchronous: str = "normal"
    readers: int = 2


_NETWORK_OPTIONS = frozenset({"pool_min_size", "pool_max_size", "connect_timeout",
                              "command_timeout"})
_SQLITE_OPTIONS = frozenset({"busy_timeout", "synchronous", "readers", "connect_timeout"})


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a backend's adapter lives and what installs its driver."""

    name: str
    module: str
    driver: str
    extra: str
    options: frozenset[str]


_SQLITE = Backend("sqlite", "power_loop.store.sqlite.driver", "aiosqlite", "sqlite",
                  _SQLITE_OPTIONS)
_POSTGRES = Backend("postgresql", "power_loop.store.postgres.driver", "asyncpg", "postgres",
                    _NETWORK_OPTIONS)
_MYSQL = Backend("mysql", "power_loop.store.mysql.driver", "aiomysql", "mysql",
                 _NETWORK_OPTIONS)

_SCHEMES = {
    "sqlite": _SQLITE, "sqlite3": _SQLITE,
    "postgresql": _POSTGRES, "postgres": _POSTGRES,
    "mysql": _MYSQL, "mariadb": _MYSQL,
}


@dataclass(frozen=True, slots=True)
class ParsedDSN:
    """A DSN split into what the driver adapter needs.

    Attributes:
        backend: The backend chosen by the scheme.
        location: SQLite: the file path or ``:memory:``. Others: the DSN with
            power_loop's own options removed (credentials included: never log it).
        options: Connection options, DSN query merged with keyword overrides.
        extra: Query parameters power_loop does not own, for the driver.
    """

    backend: Backend
    location: str
    options: ConnectOptions
    extra: Mapping[str, str]

    def __repr__(self) -> str:
        return f"ParsedDSN(backend={self.backend.name!r}, location={redact_dsn(self.location)!r})"


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _coerce(name: str, raw: Any) -> Any:
    field = {f.name: f for f in dataclasses.fields(ConnectOptions)}[name]
    if raw is None:
        return None
    try:
        if name in {"pool_min_size", "pool_max_size", "readers"}:
            value: Any = int(raw)
            if value < (0 if name == "pool_min_size" else 1):
                raise ValueError
        elif name == "synchronous":
            value = str(raw).lower()
            if value not in {"normal", "full", "extra", "off"}:
                raise ValueError
        else:
            value = float(raw)
            if value <= 0:
                raise ValueError
    except (TypeError, ValueError):
        raise InvalidDSNError(
            f"option {name}={raw!r} is not valid (expected {field.type}); "
            "see ConnectOptions for the accepted values"
        ) from None
    return value


def parse_dsn(dsn: str, **overrides: Any) -> ParsedDSN:
    """Split ``dsn`` and merge ``overrides`` (keyword options win over the query string).

    Raises:
        InvalidDSNError: unknown scheme, unknown option, or an invalid value.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidDSNError("a DSN is required: a SQLite file path, sqlite:///..., "
                              "postgresql://... or mysql://...")
    query: dict[str, str] = {}
    if "://" not in dsn:
        # A bare path (or :memory:) is SQLite; it takes no query string, since '?' is a
        # legal file name character.
        backend, location = _SQLITE, dsn
    else:
        try:
            parts = urlsplit(dsn)
        except ValueError as exc:
            raise InvalidDSNError(f"cannot parse DSN {redact_dsn(dsn)!r}: {exc}") from None
        backend_or_none = _SCHEMES.get(parts.scheme.lower())
        if backend_or_none is None:
            raise InvalidDSNError(
                f"unknown DSN scheme {parts.scheme!r}; use sqlite://, postgresql:// or mysql://")
        backend = backend_or_none
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if backend is _SQLITE:
            # sqlite:///relative.db and sqlite:////absolute.db, as in SQLAlchemy.
            if parts.netloc:
                raise InvalidDSNError("a sqlite DSN has no host: write sqlite:///file.db")
            location = unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path
            if not location:
                raise InvalidDSNError("a sqlite DSN needs a file path: sqlite:///app.db")
        else:
            ours = {k: v for k, v in query.items() if k in _NETWORK_OPTIONS}
            rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                    if k not in ours]
            location = urlunsplit(parts._replace(
                query="&".join(f"{k}={v}" for k, v in rest)))
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, raw in query.items():
        if key in backend.options:
            values[key] = _coerce(key, raw)
        elif backend is _SQLITE or key in ConnectOptions.__dataclass_fields__:
            raise InvalidDSNError(
                f"option {key!r} is not understood by the {backend.name} backend; "
                f"it accepts: {', '.join(sorted(backend.options))}")
        else:
            extra[key] = raw
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in ConnectOptions.__dataclass_fields__:
            raise InvalidDSNError(f"unknown connection option {key!r}")
        values[key] = _coerce(key, raw)
    options = ConnectOptions(**values)
    if options.pool_min_size > options.pool_max_size:
        raise InvalidDSNError(
            f"pool_min_size={options.pool_min_size} exceeds pool_max_size={options.pool_max_size}")
    return ParsedDSN(backend=backend, location=location, options=options, extra=extra)


def load_backend(backend: Backend) -> Any:
    """Import a backend's driver adapter; a missing driver names the extra to install."""
    try:
        importlib.import_module(backend.driver)
    except ImportError:
        raise MissingDriverError(backend.driver, backend.extra) from None
    return importlib.import_module(backend.module)


async def connect(dsn: str, **overrides: Any) -> Database:
    """Open a :class:`~power_loop.store.port.Database` for ``dsn``."""
    parsed = parse_dsn(dsn, **overrides)
    module = load_backend(parsed.backend)
    database: Database = await module.connect(parsed)
    return database
