"""DSN parsing and lazy backend loading.

The scheme picks the backend (built in, or registered: see
:mod:`power_loop.store.registry`); its driver is imported only then, so an unused driver is
never loaded and a missing one raises :class:`~power_loop.errors.MissingDriverError`
naming the extra to install. Connection options come from the DSN's query string and
from keyword arguments (which win).

    app.db | sqlite:///relative.db | sqlite:////abs/path.db | :memory:
    postgresql://user:pass@host:5432/db?pool_max_size=20
    mysql://user:pass@host:3306/db?connect_timeout=5&ssl-mode=VERIFY_IDENTITY&ssl-ca=ca.pem
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from power_loop.errors import InvalidDSNError, MissingDriverError
from power_loop.store.registry import (
    BUILT_IN_SCHEMES,
    SQLITE,
    StoreBackend,
    backend_for_scheme,
    registered_backends,
)

if TYPE_CHECKING:
    from power_loop.store.port import Database, Dialect


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
        create: Create a SQLite file that does not exist (``open_store`` turns this off
            under ``SchemaPolicy.VERIFY`` and ``NONE``, which must not create anything).
    """

    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout: float = 10.0
    command_timeout: float | None = None
    busy_timeout: float = 30.0
    synchronous: str = "normal"
    readers: int = 2
    create: bool = True


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

    backend: StoreBackend
    location: str
    options: ConnectOptions
    extra: Mapping[str, str]

    def __repr__(self) -> str:
        return f"ParsedDSN(backend={self.backend.name!r}, location={redact_dsn(self.location)!r})"


_SECRET_PARAMS = frozenset({"password", "sslpassword", "passwd"})


def redact_dsn(dsn: str) -> str:
    """The DSN with its passwords (user info and query string) replaced, safe to log."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:
        return "<unparseable dsn>"
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(k.lower() in _SECRET_PARAMS for k, _ in query)
    if password is None and not secret_query:
        return dsn  # untouched: re-assembling could change what it means (sqlite:////abs)
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    if secret_query:
        parts = parts._replace(query=urlencode(
            [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in query], safe="*/:"))
    return urlunsplit(parts)


def _coerce(name: str, raw: Any) -> Any:
    field = {f.name: f for f in dataclasses.fields(ConnectOptions)}[name]
    if raw is None:
        return None
    value: Any
    try:
        if name == "create":
            if isinstance(raw, bool):
                return raw
            value = {"true": True, "1": True, "false": False, "0": False}[str(raw).lower()]
        elif name in {"pool_min_size", "pool_max_size", "readers"}:
            value = int(raw)
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
    except (TypeError, ValueError, KeyError):
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
        backend, location = SQLITE, dsn
    else:
        try:
            parts = urlsplit(dsn)
            parts.port  # noqa: B018 - parsing the port raises ValueError when it is bad
        except ValueError as exc:
            raise InvalidDSNError(f"cannot parse DSN {redact_dsn(dsn)!r}: {exc}") from None
        backend_or_none = backend_for_scheme(parts.scheme)
        if backend_or_none is None:
            raise InvalidDSNError(
                f"unknown DSN scheme {parts.scheme!r}; use sqlite://, postgresql:// or "
                "mysql://, or register the backend that serves it (register_backend)")
        backend = backend_or_none
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if backend.file_dsn:
            # sqlite:///relative.db and sqlite:////absolute.db, as in SQLAlchemy.
            scheme = parts.scheme.lower()
            if parts.netloc:
                raise InvalidDSNError(
                    f"a {scheme} DSN has no host: write {scheme}:///file.db")
            location = unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path
            if not location:
                raise InvalidDSNError(
                    f"a {scheme} DSN needs a file path: {scheme}:///app.db")
        else:
            rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                    if k not in backend.options]
            location = urlunsplit(parts._replace(query=urlencode(rest)))
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, raw in query.items():
        if key in backend.options:
            values[key] = _coerce(key, raw)
        elif key in backend.driver_options:
            extra[key] = raw
        else:
            raise InvalidDSNError(
                f"option {key!r} is not understood by the {backend.name} backend; "
                f"it accepts: {', '.join(sorted(backend.options | backend.driver_options))}")
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in ConnectOptions.__dataclass_fields__:
            raise InvalidDSNError(
                f"unknown connection option {key!r}; the options are: "
                f"{', '.join(ConnectOptions.__dataclass_fields__)}")
        values[key] = _coerce(key, raw)
    options = ConnectOptions(**values)
    if options.pool_min_size > options.pool_max_size:
        raise InvalidDSNError(
            f"pool_min_size={options.pool_min_size} exceeds pool_max_size={options.pool_max_size}")
    return ParsedDSN(backend=backend, location=location, options=options, extra=extra)


DIALECT_NAMES: tuple[str, ...] = BUILT_IN_SCHEMES
"""The built-in names :func:`dialect_for` accepts (the DSN schemes); it also accepts the
schemes of registered backends."""


def dialect_for(name: str) -> Dialect:
    """The dialect for a scheme name (``sqlite``, ``postgres``, ``mysql``...).

    Only the dialect module is imported, never the driver, so DDL can be rendered for an
    engine whose driver is not installed.
    """
    backend = backend_for_scheme(name)
    if backend is None:
        raise InvalidDSNError(
            f"unknown dialect {name!r}; choose one of {', '.join(DIALECT_NAMES)} or the "
            f"scheme of a registered backend ({', '.join(registered_backends())})")
    return backend.load_dialect()


def load_backend(backend: StoreBackend) -> Any:
    """Import a backend's driver adapter; a missing driver names the extra to install."""
    if backend.driver is not None:
        try:
            importlib.import_module(backend.driver)
        except ImportError:
            raise MissingDriverError(backend.driver, backend.extra or backend.name) from None
    return importlib.import_module(backend.adapter)


async def connect(dsn: str, **overrides: Any) -> Database:
    """Open a :class:`~power_loop.store.port.Database` for ``dsn``."""
    parsed = parse_dsn(dsn, **overrides)
    module = load_backend(parsed.backend)
    database: Database = await module.connect(parsed)
    return database
