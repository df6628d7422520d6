"""The backend registry: which DSN schemes exist, and where their code lives.

The three built-in backends are registered here. Third parties add theirs in one of two
ways, both documented in docs/storage.md ("Writing a backend"):

* a call, ``power_loop.store.register_backend(StoreBackend(...))``, made at import time
  of the package that holds the backend;
* an entry point in the ``power_loop.backends`` group naming a :class:`StoreBackend`
  object (``toy = "toy_backend:BACKEND"``). Entry points are read only when a name or
  scheme is not registered yet, so a process that only uses the built-in backends never
  imports a plugin.

A registration names modules, not objects: the dialect is imported when SQL is rendered
(without the driver), the adapter only when a DSN of its scheme is opened.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from power_loop.errors import ConfigurationError

if TYPE_CHECKING:
    from power_loop.store.port import Dialect

ENTRY_POINT_GROUP = "power_loop.backends"
"""The entry point group third-party backends are published under."""

_NETWORK_OPTIONS = frozenset({"pool_min_size", "pool_max_size", "connect_timeout",
                              "command_timeout"})
_SQLITE_OPTIONS = frozenset({"busy_timeout", "synchronous", "readers", "connect_timeout",
                            "create"})
# Options handed to the driver as they stand. asyncpg would send any other name to the
# server as a setting, where a typo fails late and obscurely: refused here instead.
_ASYNCPG_OPTIONS = frozenset({
    "host", "port", "dbname", "database", "user", "password", "passfile", "service",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword",
    "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "target_session_attrs", "krbsrvname", "gsslib", "application_name",
})
_AIOMYSQL_OPTIONS = frozenset({"unix_socket", "ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"})

_NAME = re.compile(r"[a-z][a-z0-9_+.-]{0,39}")


@dataclass(frozen=True, slots=True)
class StoreBackend:
    """A storage backend: its name, its DSN schemes, and where its code lives.

    Attributes:
        name: The backend's public name, also one of its schemes; its dialect's
            :attr:`~Dialect.name` is the same. ``--backends`` takes it in the
            conformance suite.
        schemes: The DSN schemes that select it (``toysqlite`` for ``toysqlite://...``).
        dialect: ``"module:Class"`` of its :class:`~power_loop.store.port.Dialect`
            subclass; the module must import without the driver.
        adapter: The module whose ``async def connect(parsed: ParsedDSN) -> Database``
            opens it; the only module that imports the driver.
        options: The :class:`~power_loop.store.dsn.ConnectOptions` fields it honours
            (accepted in the DSN's query string).
        driver_options: Further query parameters handed to the adapter as they stand,
            in :attr:`ParsedDSN.extra <power_loop.store.dsn.ParsedDSN.extra>`.
        driver: The driver's import name, checked before the adapter is imported so a
            missing driver raises :class:`~power_loop.errors.MissingDriverError`;
            ``None`` when the backend's package depends on its driver.
        extra: The power-loop extra that installs ``driver`` (built-in backends).
        file_dsn: The DSN names a file, as SQLite's does (``scheme:///relative.db``,
            ``scheme:////absolute.db``); the path becomes ``ParsedDSN.location``.
            Otherwise the location is the DSN minus power_loop's own options.
        test_dsn: For the conformance suite: a DSN of a fresh database for one test,
            given a temporary directory (a file in it, or a server named by an
            environment variable). ``None``: the backend cannot be certified.
    """

    name: str
    schemes: tuple[str, ...]
    dialect: str
    adapter: str
    options: frozenset[str]
    driver_options: frozenset[str] = frozenset()
    driver: str | None = None
    extra: str | None = None
    file_dsn: bool = False
    test_dsn: Callable[[Path], str] | None = None

    def load_dialect(self) -> Dialect:
        """A new instance of the backend's dialect (the driver is not imported)."""
        module_name, _, class_name = self.dialect.partition(":")
        dialect: Dialect = getattr(importlib.import_module(module_name), class_name)()
        return dialect


_BUILT_IN = (
    StoreBackend("sqlite", ("sqlite", "sqlite3"), "power_loop.store.sqlite.dialect:SQLiteDialect",
                 "power_loop.store.sqlite.driver", _SQLITE_OPTIONS,
                 extra="sqlite", file_dsn=True),
    StoreBackend("postgresql", ("postgresql", "postgres"),
                 "power_loop.store.postgres.dialect:PostgresDialect",
                 "power_loop.store.postgres.driver", _NETWORK_OPTIONS, _ASYNCPG_OPTIONS,
                 driver="asyncpg", extra="postgres"),
    StoreBackend("mysql", ("mysql", "mariadb"), "power_loop.store.mysql.dialect:MySQLDialect",
                 "power_loop.store.mysql.driver", _NETWORK_OPTIONS, _AIOMYSQL_OPTIONS,
                 driver="aiomysql", extra="mysql"),
)
SQLITE: StoreBackend = _BUILT_IN[0]
"""The backend of bare paths (``app.db``, ``:memory:``)."""

BUILT_IN_SCHEMES: tuple[str, ...] = tuple(s for b in _BUILT_IN for s in b.schemes)
"""The schemes of the built-in backends."""

_by_name: dict[str, StoreBackend] = {b.name: b for b in _BUILT_IN}
_by_scheme: dict[str, StoreBackend] = {s: b for b in _BUILT_IN for s in b.schemes}
_entry_points_loaded: dict[str, str] = {}  # "name=value" of each loaded: its backend


def register_backend(backend: StoreBackend) -> None:
    """Make ``backend`` available to DSNs of its schemes (and to the conformance suite).

    Registering the same object again does nothing, so a module that registers at import
    time may be imported twice.

    Raises:
        ConfigurationError: ``backend`` is not a :class:`StoreBackend`, a name or scheme
            is not a lowercase token, the name is not among the schemes, or another
            backend already holds one of them.
    """
    if not isinstance(backend, StoreBackend):
        raise ConfigurationError(
            f"register_backend takes a StoreBackend, not {type(backend).__name__}")
    if not backend.schemes:
        raise ConfigurationError(f"backend {backend.name!r} names no DSN scheme")
    for token in (backend.name, *backend.schemes):
        if not isinstance(token, str) or not _NAME.fullmatch(token):
            raise ConfigurationError(
                f"backend name or scheme {token!r} is not valid: use lowercase letters, "
                "digits and + . - _, starting with a letter")
    if backend.name not in backend.schemes:
        raise ConfigurationError(
            f"backend {backend.name!r}: its name must also be one of its schemes "
            f"{backend.schemes!r} (DDL is rendered by scheme name)")
    if ":" not in backend.dialect:
        raise ConfigurationError(
            f"backend {backend.name!r}: dialect must read 'module:Class', "
            f"not {backend.dialect!r}")
    holders = {_by_name.get(backend.name), *(_by_scheme.get(s) for s in backend.schemes)}
    holders.discard(None)
    if holders == {backend}:
        return
    taken = sorted(holder.name for holder in holders if holder is not None)
    if taken:
        raise ConfigurationError(
            f"backend {backend.name!r} clashes with the registered backend(s) {taken}: "
            "choose another name and schemes")
    _by_name[backend.name] = backend
    for scheme in backend.schemes:
        _by_scheme[scheme] = backend


def _load_entry_points() -> None:
    """Register every ``power_loop.backends`` entry point not loaded yet."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"{entry.name}={entry.value}"
        if key in _entry_points_loaded:
            continue
        try:
            backend = entry.load()
        except Exception as exc:
            raise ConfigurationError(
                f"the {ENTRY_POINT_GROUP} entry point {entry.name!r} ({entry.value}) "
                f"failed to load: {type(exc).__name__}: {exc}") from exc
        register_backend(backend)
        _entry_points_loaded[key] = backend.name


def backend_for_scheme(scheme: str) -> StoreBackend | None:
    """The backend a DSN scheme selects, or ``None`` if no backend claims it."""
    scheme = scheme.lower()
    if scheme not in _by_scheme:
        _load_entry_points()
    return _by_scheme.get(scheme)


def backend_named(name: str) -> StoreBackend | None:
    """The backend registered under ``name``, or ``None``."""
    if name not in _by_name:
        _load_entry_points()
    return _by_name.get(name)


def registered_backends() -> tuple[str, ...]:
    """The names of every backend: the built-in ones first, then the registered ones."""
    _load_entry_points()
    return tuple(_by_name)


def unregister_backend(name: str) -> None:
    """Forget a backend registered by :func:`register_backend` (tests that register a
    backend for a while); the built-in backends cannot be removed."""
    backend = _by_name.get(name)
    if backend is None or backend in _BUILT_IN:
        return
    del _by_name[name]
    for key in [k for k, loaded in _entry_points_loaded.items() if loaded == name]:
        del _entry_points_loaded[key]
    for scheme in backend.schemes:
        if _by_scheme.get(scheme) is backend:
            del _by_scheme[scheme]
