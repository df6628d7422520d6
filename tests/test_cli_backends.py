"""``power-loop sessions`` export/import on every backend, and across engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from power_loop import Store, open_store
from power_loop.testing import drop_store_tables, fresh_prefix
from tests.cli_support import run_cli, seed_sessions

pytestmark = pytest.mark.timeout(180)


async def test_export_import_round_trip(store: Store, dsn: str, table_prefix: str,
                                        tmp_path: Path) -> None:
    await seed_sessions(dsn, table_prefix)
    where = ("--dsn", dsn, "--prefix", table_prefix)
    exported = await run_cli("sessions", "export", *where, "alpha")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout.split("\n")[0])["session_id"] == "alpha"

    deleted = await run_cli("sessions", "delete", *where, "alpha")
    assert deleted.returncode == 0, deleted.stderr
    assert [s.id for s in await store.list_sessions()] == ["beta"]

    imported = await run_cli("sessions", "import", *where, "-",
                             stdin=exported.stdout.encode("utf-8"))
    assert imported.returncode == 0, imported.stderr
    again = await run_cli("sessions", "export", *where, "alpha")
    assert again.stdout == exported.stdout

    shown = await run_cli("sessions", "show", *where, "alpha", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["session"]["messages"] == 3
    assert (await store.get_session("alpha")).next_seq == 3

    # Into SQLite and back out: the same bytes, whichever engine wrote them.
    copy = tmp_path / "copy.db"
    moved = await run_cli("sessions", "import", "--dsn", str(copy), "-",
                          stdin=exported.stdout.encode("utf-8"))
    assert moved.returncode == 0, moved.stderr
    from_copy = await run_cli("sessions", "export", "--dsn", str(copy), "alpha")
    assert from_copy.stdout == exported.stdout


async def test_import_provisions_new_tables(store: Store, dsn: str, table_prefix: str) -> None:
    await seed_sessions(dsn, table_prefix)
    exported = await run_cli("sessions", "export", "--dsn", dsn, "--prefix", table_prefix,
                             "alpha")
    other = fresh_prefix()
    where = ("--dsn", dsn, "--prefix", other)
    try:
        missing = await run_cli("sessions", "list", *where)
        assert missing.returncode == 2
        assert missing.stderr.startswith("error [schema_missing]: ")
        imported = await run_cli("sessions", "import", *where, "-",
                                 stdin=exported.stdout.encode("utf-8"))
        assert imported.returncode == 0, imported.stderr
        listed = await run_cli("sessions", "list", *where, "--json")
        assert [s["id"] for s in json.loads(listed.stdout)] == ["alpha"]
        for command in (("prune", "--older-than", "1d"), ("vacuum",)):
            result = await run_cli(*command, *where)
            assert result.returncode == 0, result.stderr
    finally:
        created = await open_store(dsn, table_prefix=other)
        await drop_store_tables(created)
        await created.aclose()


async def test_round_trip_of_a_session_without_system_prompt(
        store: Store, dsn: str, table_prefix: str) -> None:
    await store.create_session("bare")
    where = ("--dsn", dsn, "--prefix", table_prefix)
    exported = await run_cli("sessions", "export", *where, "bare")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout.split("\n")[1])["row"]["system_prompt"] is None
    await store.delete_session("bare")
    imported = await run_cli("sessions", "import", *where, "-",
                             stdin=exported.stdout.encode("utf-8"))
    assert imported.returncode == 0, imported.stderr
    assert (await store.get_session("bare")).system_prompt is None
    again = await run_cli("sessions", "export", *where, "bare")
    assert again.stdout == exported.stdout


async def test_export_of_a_session_holding_lone_surrogates(
        store: Store, dsn: str, table_prefix: str) -> None:
    text = "file-\udcff.txt \ud800"  # what surrogateescape makes of undecodable bytes
    await store.create_session("odd", system_prompt=text)
    where = ("--dsn", dsn, "--prefix", table_prefix)
    exported = await run_cli("sessions", "export", *where, "odd")
    assert exported.returncode == 0, exported.stderr
    await store.delete_session("odd")
    imported = await run_cli("sessions", "import", *where, "-",
                             stdin=exported.stdout.encode("utf-8"))
    assert imported.returncode == 0, imported.stderr
    assert (await store.get_session("odd")).system_prompt == text
