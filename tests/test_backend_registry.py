"""Backends are found through a registry third parties extend; every dialect is explicit.

The toy backend (tests/toy_backend: SQLite as ``toysqlite://``) is registered here both
ways a third party can: by the documented call, and as an installed package's
``power_loop.backends`` entry point. ``test_the_toy_backend_passes_the_conformance_core``
then certifies it with the conformance suite, unchanged, in a pytest of its own.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from power_loop import ConfigurationError, InvalidDSNError, open_store
from power_loop.store import ColumnType, Dialect, StoreBackend, register_backend
from power_loop.store.dsn import dialect_for, parse_dsn
from power_loop.store.migrations import render_ddl
from power_loop.store.mysql.dialect import MySQLDialect
from power_loop.store.postgres import driver as postgres_driver
from power_loop.store.postgres.dialect import PostgresDialect
from power_loop.store.registry import backend_for_scheme, registered_backends, unregister_backend
from power_loop.store.sqlite.dialect import SQLiteDialect
from power_loop.testing import certifiable_backends
from tests.toy_backend import BACKEND as TOY
from tests.toy_backend.dialect import ToySQLiteDialect

ROOT = Path(__file__).parent.parent
TOY_SITE = Path(__file__).parent / "toy_backend" / "site"

ABSTRACT = {"column_type", "upsert", "create_index", "migration_lock", "table_exists",
            "column_exists", "index_exists", "vacuum", "classify_error",
            "commit_outcome"}


@pytest.fixture
def toy_registered() -> Iterator[StoreBackend]:
    register_backend(TOY)
    try:
        yield TOY
    finally:
        unregister_backend(TOY.name)


def test_the_dialect_base_states_no_engine_sql() -> None:
    assert Dialect.__abstractmethods__ == ABSTRACT
    with pytest.raises(TypeError):
        Dialect()  # type: ignore[abstract]

    class Partial(Dialect):
        name = "partial"
        now_us = "0"

        def column_type(self, kind: ColumnType) -> str:
            return "TEXT"

    with pytest.raises(TypeError, match="upsert"):
        Partial()  # type: ignore[abstract]
    source = inspect.getsource(inspect.getmodule(Dialect))  # type: ignore[arg-type]
    body = source[source.index("class Dialect"):source.index("def insert_on_conflict")]
    for engine_sql in ("current_schema", "pg_indexes", "ON CONFLICT", "information_schema"):
        assert engine_sql not in body


@pytest.mark.parametrize("dialect", [SQLiteDialect, PostgresDialect, MySQLDialect,
                                     ToySQLiteDialect])
def test_every_dialect_states_each_abstract_method(dialect: type[Dialect]) -> None:
    for method in ABSTRACT:
        assert method in vars(dialect), f"{dialect.__name__} inherits {method}"
    dialect()


async def test_a_registered_backend_opens_through_its_own_dialect(
        toy_registered: StoreBackend, tmp_path: Path) -> None:
    assert backend_for_scheme("TOYSQLITE") is toy_registered
    assert "toysqlite" in registered_backends() and "toysqlite" in certifiable_backends()
    assert parse_dsn(f"toysqlite:///{tmp_path}/a.db?busy_timeout=2").location == \
        f"{tmp_path}/a.db"
    async with await open_store(f"toysqlite:///{tmp_path}/app.db",
                                table_prefix="pl_") as store:
        assert isinstance(store._database.dialect, ToySQLiteDialect)
        await store.create_session("s")
        assert (await store.get_session("s")).id == "s"
    # The toy states, statement by statement, the SQL SQLite's dialect states.
    assert render_ddl(dialect_for("toysqlite"), "pl_") == render_ddl(SQLiteDialect(), "pl_")


def test_registering_the_same_backend_twice_is_harmless(toy_registered: StoreBackend) -> None:
    register_backend(toy_registered)
    assert backend_for_scheme("toysqlite") is toy_registered


@pytest.mark.parametrize(("change", "says"), [
    ({"name": "sqlite", "schemes": ("sqlite",)}, "clashes"),
    ({"schemes": ("toysqlite", "postgres")}, "clashes"),
    ({"name": "Toy Backend"}, "not valid"),
    ({"schemes": ("toy://",)}, "not valid"),
    ({"schemes": ()}, "no DSN scheme"),
    ({"schemes": ("toy",)}, "must also be one of its schemes"),
    ({"dialect": "tests.toy_backend.dialect.ToySQLiteDialect"}, "module:Class"),
])
def test_a_bad_registration_is_refused(change: dict[str, object], says: str) -> None:
    fields = {f: getattr(TOY, f) for f in TOY.__dataclass_fields__}
    before = registered_backends()
    with pytest.raises(ConfigurationError) as info:
        register_backend(StoreBackend(**{**fields, **change}))
    assert says in info.value.message
    assert registered_backends() == before


def test_register_takes_only_a_store_backend() -> None:
    with pytest.raises(ConfigurationError):
        register_backend("toysqlite")  # type: ignore[arg-type]


def test_an_unknown_scheme_says_how_to_register_one() -> None:
    with pytest.raises(InvalidDSNError) as info:
        parse_dsn("nosuchdb:///x")
    assert "register_backend" in info.value.message


def test_an_installed_entry_point_is_found_without_a_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY_SITE))
    try:
        found = backend_for_scheme("toysqlite")
        assert found is TOY
        assert isinstance(dialect_for("toysqlite"), ToySQLiteDialect)
    finally:
        unregister_backend(TOY.name)


def test_a_broken_entry_point_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info_dir = tmp_path / "broken_backend-1.0.dist-info"
    info_dir.mkdir()
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-backend\n"
                                       "Version: 1.0\n")
    (info_dir / "entry_points.txt").write_text(
        "[power_loop.backends]\nbroken = no_such_module_pl:BACKEND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError) as info:
        parse_dsn("nosuchdb:///x")
    assert "'broken'" in info.value.message and "no_such_module_pl" in info.value.message
    assert parse_dsn("sqlite:///x.db").backend.name == "sqlite"  # built-ins never look


def test_every_asyncpg_call_maps_errors_at_the_one_boundary() -> None:
    tree = ast.parse(inspect.getsource(postgres_driver))
    handlers = [node for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler)
                and any(isinstance(n, ast.Raise) and n.cause is not None
                        for n in ast.walk(node))]
    assert handlers == []  # no try/except re-raising a mapped error anywhere
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "_failure"]
    assert len(calls) == 1  # in _Boundary.__exit__


# The conformance core the toy runs in every test run; the whole suite runs on it with
# `PYTHONPATH=.:tests/toy_backend/site pytest conformance --backends toysqlite`.
CONFORMANCE_CORE = ["conformance/test_sessions.py", "conformance/test_messages.py",
                    "conformance/test_sends.py", "conformance/test_schema.py",
                    "conformance/test_engine_errors.py", "conformance/test_hostile.py",
                    "conformance/test_multiprocess.py"]


def test_the_toy_backend_passes_the_conformance_core(tmp_path: Path) -> None:
    # Installed as a package would be: the entry point, in this pytest and in the worker
    # processes the suite starts. No -p plugin, no change to the suite.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TOY_SITE)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backends",
         "toysqlite", f"--basetemp={tmp_path / 'run'}", *CONFORMANCE_CORE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("toysqlite")]
    assert summary and "passed" in summary[0] and "failed" not in summary[0], result.stdout
