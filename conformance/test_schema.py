"""Schema policies, versions, and several processes creating the schema at once."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from conformance.probes import ALL_TABLES, existing_tables, version_rows
from conformance.samples import message
from power_loop import (
    SchemaMissingError,
    SchemaPolicy,
    SchemaVersionError,
    Store,
    open_store,
)
from power_loop.store import LATEST_VERSION, render_ddl
from power_loop.store.dsn import dialect_for
from power_loop.store.migrations import ddl_statements
from power_loop.store.schema import SCHEMA_VERSION_TABLE

BOOT_WORKER = Path(__file__).with_name("_boot_worker.py")
EVERY_VERSION = dict.fromkeys(range(1, LATEST_VERSION + 1), 1)


async def _bare(dsn: str, prefix: str) -> Store:
    return await open_store(dsn, table_prefix=prefix, schema=SchemaPolicy.NONE)


def _statements(ddl: str) -> list[str]:
    """A DDL script split back into statements, as an operator's tool would."""
    return [s.removesuffix(";") for s in ddl.strip().split(";\n\n")]


async def _run_ddl(store: Store, ddl: str) -> None:
    """Run a DDL script statement by statement, each autocommitted."""
    async with store._database.autocommit() as conn:
        for statement in _statements(ddl):
            await conn.execute(statement)


async def test_verify_on_empty_prefix_carries_the_exact_ddl(
        dsn: str, backend: str, bare_prefix: str) -> None:
    with pytest.raises(SchemaMissingError) as info:
        await open_store(dsn, table_prefix=bare_prefix, schema=SchemaPolicy.VERIFY)

    assert info.value.code == "schema_missing"
    assert info.value.backend == backend
    assert info.value.reason and "CREATE" not in info.value.reason
    assert info.value.message == f"{info.value.reason}\n\n-- run this DDL:\n{info.value.ddl}"
    async with await _bare(dsn, bare_prefix) as store:
        dialect = store._database.dialect
        assert info.value.ddl == render_ddl(dialect, bare_prefix)
        assert _statements(info.value.ddl) == ddl_statements(dialect, bare_prefix)
        assert await existing_tables(store._database, bare_prefix) == set()
        await _run_ddl(store, info.value.ddl)
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION
    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.VERIFY) as verified:
        await verified.create_session("s")
        assert await verified.append_messages("s", [message("works")]) == [0]


async def test_verify_passes_on_a_provisioned_schema(dsn: str, bare_prefix: str) -> None:
    async with await open_store(dsn, table_prefix=bare_prefix) as created:
        await created.create_session("s")

    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.VERIFY) as verified:
        assert (await verified.get_session("s")).id == "s"


async def test_none_creates_nothing(dsn: str, bare_prefix: str) -> None:
    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.NONE) as store:
        assert await existing_tables(store._database, bare_prefix) == set()

    with pytest.raises(SchemaMissingError):
        await open_store(dsn, table_prefix=bare_prefix, schema=SchemaPolicy.VERIFY)


async def test_auto_create_is_idempotent(dsn: str, bare_prefix: str) -> None:
    first = await open_store(dsn, table_prefix=bare_prefix)
    try:
        await first.create_session("s")
        async with await open_store(dsn, table_prefix=bare_prefix) as second:
            await second.append_messages("s", [message("from second")])
        async with await open_store(dsn, table_prefix=bare_prefix) as third:
            assert [m.body["text"] for m in await third.read_messages("s")] == ["from second"]
        assert await existing_tables(first._database, bare_prefix) == ALL_TABLES
        assert await version_rows(first._database, bare_prefix) == EVERY_VERSION
    finally:
        await first.aclose()


async def test_a_newer_schema_version_is_refused(dsn: str, bare_prefix: str) -> None:
    async with await open_store(dsn, table_prefix=bare_prefix) as store:
        table = store._database.dialect.quote(bare_prefix + SCHEMA_VERSION_TABLE.name)
        async with store._database.autocommit() as conn:
            await conn.execute(f"INSERT INTO {table} (version, description, applied_at) "
                               f"VALUES ({LATEST_VERSION + 1}, 'from the future', 0)")

    for policy in (SchemaPolicy.AUTO_CREATE, SchemaPolicy.VERIFY):
        with pytest.raises(SchemaVersionError) as info:
            await open_store(dsn, table_prefix=bare_prefix, schema=policy)
        assert info.value.code == "schema_version"
    async with await _bare(dsn, bare_prefix) as untouched:
        assert await version_rows(untouched._database, bare_prefix) == {
            **EVERY_VERSION, LATEST_VERSION + 1: 1}


async def _drop_messages_table(dsn: str, prefix: str) -> None:
    async with await open_store(dsn, table_prefix=prefix) as store:
        await store.create_session("s", system_prompt="kept")
        async with store._database.autocommit() as conn:
            await conn.execute(f"DROP TABLE {store._database.dialect.quote(prefix + 'messages')}")


async def test_a_dropped_table_is_recreated_by_auto_create(dsn: str, bare_prefix: str) -> None:
    # On MySQL, re-running CREATE TABLE IF NOT EXISTS over the tables that remain must
    # not surface server notes as warnings (this suite turns warnings into errors).
    await _drop_messages_table(dsn, bare_prefix)

    with pytest.raises(SchemaMissingError):
        await open_store(dsn, table_prefix=bare_prefix, schema=SchemaPolicy.VERIFY)
    async with await open_store(dsn, table_prefix=bare_prefix) as store:
        assert await existing_tables(store._database, bare_prefix) == ALL_TABLES
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION
        assert (await store.get_session("s")).system_prompt == "kept"
        assert await store.append_messages("s", [message("again")]) == [0]


async def test_verify_ddl_for_a_dropped_table_is_runnable(dsn: str, bare_prefix: str) -> None:
    await _drop_messages_table(dsn, bare_prefix)

    with pytest.raises(SchemaMissingError) as info:
        await open_store(dsn, table_prefix=bare_prefix, schema=SchemaPolicy.VERIFY)
    assert "messages" in info.value.reason and "CREATE" not in info.value.reason
    async with await _bare(dsn, bare_prefix) as store:
        assert info.value.ddl == render_ddl(store._database.dialect, bare_prefix)
        await _run_ddl(store, info.value.ddl)
        assert await existing_tables(store._database, bare_prefix) == ALL_TABLES
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION

    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.VERIFY) as verified:
        assert (await verified.get_session("s")).system_prompt == "kept"
        assert await verified.append_messages("s", [message("again")]) == [0]


async def test_the_ddl_script_runs_twice(dsn: str, bare_prefix: str) -> None:
    async with await _bare(dsn, bare_prefix) as store:
        ddl = render_ddl(store._database.dialect, bare_prefix)
        await _run_ddl(store, ddl)
        await _run_ddl(store, ddl)

        assert await existing_tables(store._database, bare_prefix) == ALL_TABLES
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION
    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.VERIFY) as verified:
        await verified.create_session("s")
        assert await verified.append_messages("s", [message("works")]) == [0]


async def test_verify_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"

    with pytest.raises(SchemaMissingError) as info:
        await open_store(str(path), table_prefix="pl_", schema=SchemaPolicy.VERIFY)

    assert info.value.code == "schema_missing" and info.value.backend == "sqlite"
    assert str(path) in info.value.reason
    assert info.value.ddl == render_ddl(dialect_for("sqlite"), "pl_")
    assert os.listdir(tmp_path) == []  # not even an empty database file


async def test_none_on_a_missing_sqlite_file_creates_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"

    async with await open_store(str(path), table_prefix="pl_",
                                schema=SchemaPolicy.NONE) as store:
        assert await existing_tables(store._database, "pl_") == set()

    assert path.exists()
    with pytest.raises(SchemaMissingError):
        await open_store(str(path), table_prefix="pl_", schema=SchemaPolicy.VERIFY)


@pytest.mark.slow
async def test_concurrent_first_boot_creates_the_schema_once(dsn: str, bare_prefix: str) -> None:
    start_at = time.time() + 2.0  # every worker has imported power_loop by then
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, str(BOOT_WORKER), dsn, bare_prefix, repr(start_at),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for _ in range(4)]
    outputs = await asyncio.gather(*(w.communicate() for w in workers))

    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr.decode(errors="replace")
    async with await open_store(dsn, table_prefix=bare_prefix,
                                schema=SchemaPolicy.VERIFY) as store:
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION
        assert await existing_tables(store._database, bare_prefix) == ALL_TABLES
        booted = await store.list_sessions()
        assert sorted(s.id for s in booted) == sorted(f"boot-{w.pid}" for w in workers)


async def _back_to_version_7(dsn: str, prefix: str) -> None:
    """A schema as version 7 left it: without the columns version 8 adds (the old
    PostgreSQL trigger goes with its column, and comes back with version 6)."""
    async with await open_store(dsn, table_prefix=prefix) as store:
        await store.create_session("s", system_prompt="kept")
        dialect = store._database.dialect
        cascade = " CASCADE" if dialect.name == "postgresql" else ""
        dropped = [("sessions", "wait_events"), *(("waits", c) for c in (
            "opened_event", "opened_seq", "decided_event", "decided_seq"))]
        async with store._database.autocommit() as conn:
            for table, column in dropped:
                await conn.execute(f"ALTER TABLE {dialect.quote(prefix + table)} DROP COLUMN "
                                   f"{dialect.quote(column)}{cascade}")
            await conn.execute(f"DELETE FROM {dialect.quote(prefix + 'schema_version')} "
                               "WHERE version = 8")


@pytest.mark.parametrize("how", ["auto_create", "verify_ddl"])
async def test_version_7_is_upgraded_to_put_waits_in_the_feed(dsn: str, bare_prefix: str,
                                                              how: str) -> None:
    from power_loop import ScriptedLLM, StatefulAgentLoop, call_tool, reply, tool

    await _back_to_version_7(dsn, bare_prefix)
    if how == "verify_ddl":
        with pytest.raises(SchemaMissingError) as info:
            await open_store(dsn, table_prefix=bare_prefix, schema=SchemaPolicy.VERIFY)
        assert "version 7" in info.value.reason
        async with await _bare(dsn, bare_prefix) as bare:
            await _run_ddl(bare, info.value.ddl)

    @tool(requires_approval=True)
    def wire(amount: int) -> str:
        """Wire money."""
        return f"wired {amount}"

    async with await open_store(dsn, table_prefix=bare_prefix) as store:
        assert await version_rows(store._database, bare_prefix) == EVERY_VERSION
        assert (await store.get_session("s")).system_prompt == "kept"
        loop = StatefulAgentLoop(llm=ScriptedLLM([call_tool("wire", {"amount": 1}),
                                                  reply("ok")]), store=store, tools=[wire])
        waiting = await loop.send("pay", "s")
        await loop.approve("s", waiting.waiting[0].wait_id)
        kinds = [(item.kind, getattr(item, "status", None))
                 async for item in loop.watch("s", follow=False)]
        assert kinds[3:5] == [("wait", "waiting"), ("wait", "approved")]
