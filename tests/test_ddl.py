"""``render_ddl``: one script per dialect, prefixed, quoted, valid, and driver-free."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from power_loop import InvalidIdentifierError, SchemaPolicy, open_store
from power_loop.store import Dialect, render_ddl
from power_loop.store.migrations import MIGRATIONS, ddl_statements
from power_loop.store.mysql.dialect import MySQLDialect
from power_loop.store.postgres.dialect import PostgresDialect
from power_loop.store.schema import SCHEMA_VERSION_TABLE
from power_loop.store.sqlite.dialect import SQLiteDialect
from power_loop.testing import drop_store_tables
from tests.cli_support import REPO, cli_env

DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SQLiteDialect, "postgresql": PostgresDialect, "mysql": MySQLDialect}
PREFIX = "zz_"
TABLES = [SCHEMA_VERSION_TABLE, *(t for m in MIGRATIONS for t in m.tables)]


def quote_char(dialect: Dialect) -> str:
    return dialect.quote("x")[0]


@pytest.fixture(params=list(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return DIALECTS[request.param]()


def test_script_is_the_statements_each_ending_in_a_semicolon(dialect: Dialect) -> None:
    statements = ddl_statements(dialect, PREFIX)
    script = render_ddl(dialect, PREFIX)
    assert script == "\n\n".join(f"{s};" for s in statements) + "\n"
    for statement in statements:
        assert statement == statement.strip()


def test_no_statement_holds_a_semicolon(dialect: Dialect) -> None:
    # No ';' inside a statement, so tools that split a script on ';' get it right.
    assert [s for s in ddl_statements(dialect, PREFIX) if ";" in s] == []


def test_prefix_is_on_every_table_and_index(dialect: Dialect) -> None:
    script = render_ddl(dialect, PREFIX)
    q = re.escape(quote_char(dialect))
    created = re.findall(rf"CREATE TABLE IF NOT EXISTS {q}(\w+){q}", script)
    assert created == [PREFIX + t.name for t in TABLES]
    indexes = re.findall(rf"INDEX (?:IF NOT EXISTS )?{q}(\w+){q}", script)
    expected = [f"{PREFIX}{t.name}_{i.suffix}" for t in TABLES for i in t.indexes]
    assert sorted(indexes) == sorted(expected) and expected
    for target in re.findall(rf"(?:ON|INSERT INTO) {q}(\w+){q}", script):
        assert target.startswith(PREFIX)
    assert "pl_" not in script  # the default prefix does not leak in


def test_an_empty_prefix_is_allowed(dialect: Dialect) -> None:
    q = quote_char(dialect)
    assert f"CREATE TABLE IF NOT EXISTS {q}sessions{q}" in render_ddl(dialect, "")


def test_identifiers_are_quoted_in_table_definitions(dialect: Dialect) -> None:
    q = quote_char(dialect)
    creates = [s for s in ddl_statements(dialect, PREFIX) if s.startswith("CREATE")]
    text = "\n".join(creates)
    for table in TABLES:
        for column in table.columns:
            assert f"{q}{column.name}{q}" in text
            bare = re.compile(rf"(?<![\w{re.escape(q)}]){column.name}(?![\w{re.escape(q)}])")
            assert not bare.search(text), f"{column.name} unquoted in {dialect.name} DDL"


def test_mysql_declares_indexes_inline() -> None:
    script = render_ddl(MySQLDialect(), PREFIX)
    assert "CREATE INDEX" not in script and "CREATE UNIQUE INDEX" not in script
    assert "INDEX IF NOT EXISTS" not in script
    assert f"INDEX `{PREFIX}sessions_created` (`created_at`, `id`)" in script
    assert f"UNIQUE INDEX `{PREFIX}sends_request_key`" in script
    assert "ENGINE=InnoDB" in script


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_other_dialects_create_indexes_idempotently(engine: str) -> None:
    script = render_ddl(DIALECTS[engine](), PREFIX)
    assert f'CREATE INDEX IF NOT EXISTS "{PREFIX}sessions_created"' in script
    assert f'CREATE UNIQUE INDEX IF NOT EXISTS "{PREFIX}sends_request_key"' in script


def test_mysql_sql_never_uses_returning() -> None:
    mysql = MySQLDialect()
    assert not mysql.supports_update_returning
    texts = [
        render_ddl(mysql, PREFIX),
        mysql.upsert("t", ["a", "b"], ["a"], ["b"]),
        mysql.upsert("t", ["a", "b"], ["a"], []),
        *(s or "" for s in mysql.migration_lock(7)),
        mysql.table_exists(),
        *mysql.vacuum(["t"]),
        mysql.render("UPDATE t SET a = ? WHERE b = ?"),
    ]
    assert not any("RETURNING" in text.upper() for text in texts)


def test_sqlite_ddl_runs_in_the_stdlib_sqlite3() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(render_ddl(SQLiteDialect(), PREFIX))
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        versions = conn.execute(f'SELECT version FROM "{PREFIX}schema_version"').fetchall()
    finally:
        conn.close()
    assert {PREFIX + t.name for t in TABLES} <= names
    assert {f"{PREFIX}{t.name}_{i.suffix}" for t in TABLES for i in t.indexes} <= names
    assert versions == [(m.version,) for m in MIGRATIONS]  # one row per migration


def test_sqlite_create_statements_run_twice() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        creates = [s for s in ddl_statements(SQLiteDialect(), PREFIX) if s.startswith("CREATE")]
        for _ in range(2):
            for statement in creates:
                conn.execute(statement)
    finally:
        conn.close()


def test_sqlite_ddl_script_runs_twice() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        script = render_ddl(SQLiteDialect(), PREFIX)
        conn.executescript(script)
        first = conn.execute(f'SELECT * FROM "{PREFIX}schema_version"').fetchall()
        conn.executescript(script)
        second = conn.execute(f'SELECT * FROM "{PREFIX}schema_version"').fetchall()
    finally:
        conn.close()
    # The version insert is an insert-or-ignore: the first run's row stays, alone.
    assert [row[0] for row in first] == [m.version for m in MIGRATIONS]
    assert second == first


def test_the_version_insert_is_an_insert_or_ignore(dialect: Dialect) -> None:
    inserts = [s for s in ddl_statements(dialect, PREFIX) if s.startswith("INSERT")]
    assert len(inserts) == len(MIGRATIONS)
    ignore = "ON DUPLICATE KEY UPDATE" if dialect.name == "mysql" else "ON CONFLICT"
    assert all(ignore in statement for statement in inserts)


@pytest.mark.parametrize("prefix", ["x; DROP", "1abc", "a" * 25, "pl_'", "pl_\n", "ä_", None])
def test_rendering_refuses_a_bad_prefix(dialect: Dialect, prefix: str) -> None:
    for render in (render_ddl, ddl_statements):
        with pytest.raises(InvalidIdentifierError) as info:
            render(dialect, prefix)
        assert info.value.code == "invalid_identifier"


async def test_sqlite_ddl_matches_what_open_store_creates(tmp_path: Path) -> None:
    by_store = tmp_path / "store.db"
    store = await open_store(str(by_store), table_prefix=PREFIX)
    await store.aclose()
    by_script = tmp_path / "script.db"
    with sqlite3.connect(by_script) as conn:
        conn.executescript(render_ddl(SQLiteDialect(), PREFIX))
    conn.close()

    def schema(path: Path) -> list[tuple[str, str, str]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT type, name, sql FROM sqlite_master "
                                "WHERE name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
        finally:
            conn.close()

    assert schema(by_script) == schema(by_store)


async def test_printed_ddl_provisions_a_schema_verify_accepts(
    dsn: str, table_prefix: str
) -> None:
    bare = await open_store(dsn, table_prefix=table_prefix, schema=SchemaPolicy.NONE)
    try:
        async with bare._database.autocommit() as conn:
            for statement in ddl_statements(bare._database.dialect, table_prefix):
                await conn.execute(statement)
        verified = await open_store(dsn, table_prefix=table_prefix, schema=SchemaPolicy.VERIFY)
        await verified.create_session("provisioned")
        assert (await verified.get_session("provisioned")).next_seq == 0
        await verified.aclose()
    finally:
        await drop_store_tables(bare)
        await bare.aclose()


def test_importing_power_loop_loads_no_driver() -> None:
    script = (
        "import json, sys\n"
        "import power_loop, power_loop.store, power_loop.cli.main\n"
        "from power_loop.store.migrations import render_ddl\n"
        "from power_loop.store.postgres.dialect import PostgresDialect\n"
        "from power_loop.store.mysql.dialect import MySQLDialect\n"
        "render_ddl(PostgresDialect(), 'pl_'); render_ddl(MySQLDialect(), 'pl_')\n"
        "drivers = ['asyncpg', 'aiomysql', 'pymysql', 'aiosqlite']\n"
        "print(json.dumps([m for m in drivers if m in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, env=cli_env(), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
