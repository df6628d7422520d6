"""``power-loop`` as users run it: a real subprocess against a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from power_loop.store import render_ddl
from power_loop.store.dsn import dialect_for
from tests.cli_support import SECRET, cli_env, run_cli, run_python, seed_sessions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def db(tmp_path: Path) -> str:
    """A SQLite store holding the sessions ``alpha`` and ``beta``."""
    path = str(tmp_path / "app.db")
    await seed_sessions(path)
    return path


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_error(result_code: int, stderr: str, code: str) -> None:
    assert result_code == 2, stderr
    assert stderr.startswith(f"error [{code}]: "), stderr
    assert "Traceback" not in stderr


# -- help and ddl ----------------------------------------------------------------------


async def test_help_lists_every_command() -> None:
    result = await run_cli("--help")
    assert result.returncode == 0
    for command in ("ddl", "sessions", "prune", "vacuum", "POWER_LOOP_DSN", "exit status"):
        assert command in result.stdout
    sessions = await run_cli("sessions", "--help")
    for action in ("list", "show", "export", "import", "delete"):
        assert action in sessions.stdout
    version = await run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("power-loop ")


async def test_store_commands_document_their_schema_policy() -> None:
    for args, policy in [(("sessions", "list"), "verify"), (("sessions", "import"), "auto_create"),
                         (("prune",), "verify"), (("vacuum",), "verify")]:
        result = await run_cli(*args, "--help")
        assert result.returncode == 0
        assert f"Default for this command: {policy}" in " ".join(result.stdout.split())


async def test_no_command_is_a_usage_error() -> None:
    result = await run_cli()
    assert result.returncode == 2
    assert "usage: power-loop" in result.stderr


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "postgresql", "mysql"])
async def test_ddl_prints_the_dialects_ddl(dialect: str) -> None:
    result = await run_cli("ddl", "--dialect", dialect, "--prefix", "acme_")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_ddl(dialect_for(dialect), "acme_")
    assert '"acme_sessions"' in result.stdout or "`acme_sessions`" in result.stdout


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
async def test_ddl_needs_no_driver(dialect: str) -> None:
    # A module set to None in sys.modules is what a package that is not installed
    # looks like to an import statement.
    script = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['asyncpg', 'aiomysql', 'aiosqlite']))\n"
        "from power_loop.cli.main import main\n"
        f"raise SystemExit(main(['ddl', '--dialect', {dialect!r}]))\n")
    result = await run_python("-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CREATE TABLE IF NOT EXISTS")


async def test_sqlite_ddl_provisions_a_store_the_cli_accepts(tmp_path: Path) -> None:
    ddl = await run_cli("ddl", "--dialect", "sqlite")
    path = tmp_path / "provisioned.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(ddl.stdout)
    conn.close()
    listed = await run_cli("sessions", "list", "--dsn", str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "" and "no sessions" in listed.stderr


async def test_ddl_rejects_a_prefix_that_is_not_an_identifier() -> None:
    result = await run_cli("ddl", "--dialect", "postgres", "--prefix", 'x"; DROP TABLE y; --')
    assert_error(result.returncode, result.stderr, "invalid_identifier")
    assert result.stdout == ""


async def test_ddl_rejects_an_unknown_dialect() -> None:
    result = await run_cli("ddl", "--dialect", "oracle")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# -- sessions list / show --------------------------------------------------------------


async def test_sessions_list(db: str) -> None:
    result = await run_cli("sessions", "list", "--dsn", db)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "CREATED", "(UTC)"]
    assert [r.split()[0] for r in rows] == ["beta", "alpha"]
    alpha = rows[1].split()
    assert alpha[-3:] == ["3", "2", "#1"]  # messages, sends, pending send


async def test_sessions_list_json_and_limit(db: str) -> None:
    result = await run_cli("sessions", "list", "--dsn", db, "--json", "--limit", "1")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [s["id"] for s in listed] == ["beta"]
    assert listed[0]["metadata"] == {"n": 2}
    assert listed[0]["created_at"].endswith("+00:00")
    assert "--limit" in result.stderr  # says there are more


async def test_sessions_list_reads_the_dsn_from_the_environment(db: str) -> None:
    result = await run_cli("sessions", "list", "--json", env=cli_env(POWER_LOOP_DSN=db))
    assert result.returncode == 0, result.stderr
    assert {s["id"] for s in json.loads(result.stdout)} == {"alpha", "beta"}


async def test_sessions_show(db: str) -> None:
    result = await run_cli("sessions", "show", "--dsn", db, "alpha")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.split("\n\n")[0].splitlines()
                  if not line.startswith("system prompt"))
    assert fields["session"] == "alpha"
    assert fields["messages"] == "3"
    assert fields["sends"] == "2, #1 pending"
    assert "system prompt  Be terse.\\nBe kind." in result.stdout
    sends = result.stdout.split("sends:\n", 1)[1].splitlines()
    assert sends[0].split()[:3] == ["SEND", "STATUS", "SOURCE"]
    rows = [line.split() for line in sends[1:]]
    assert [r[0] for r in rows] == ["#0", "#1"]
    assert rows[0][1] == "done" and rows[1][1] != "done"  # #1 is still in progress


async def test_sessions_show_json(db: str) -> None:
    result = await run_cli("sessions", "show", "--dsn", db, "alpha", "--json", "--sends", "1")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["session"]["messages"] == 3
    assert shown["session"]["system_prompt"] == "Be terse.\nBe kind."
    assert shown["session"]["metadata"] == {"user": "ana", "tags": ["x", "é"]}
    assert [s["send_index"] for s in shown["sends"]] == [1]
    assert shown["sends"][0]["finished_at"] is None
    usage = shown["usage"]  # send #0's tokens, as stored
    assert usage["own"] == usage["total"] and usage["sub_sessions"] == 0
    assert set(usage["own"]) == {"input_tokens", "output_tokens", "cache_read_tokens",
                                 "cache_write_tokens", "model_calls"}


# -- export / import / delete ----------------------------------------------------------


async def test_export_delete_import_round_trip(db: str, tmp_path: Path) -> None:
    exported = await run_cli("sessions", "export", "--dsn", db, "alpha")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.split("\n")
    assert lines[-1] == "" and json.loads(lines[0])["session_id"] == "alpha"
    assert len(lines) == 1 + 1 + 3 + 2 + 1  # header, session, messages, sends, ""

    to_file = tmp_path / "alpha.jsonl"
    written = await run_cli("sessions", "export", "--dsn", db, "alpha", "-o", str(to_file))
    assert written.returncode == 0, written.stderr
    assert to_file.read_text("utf-8") == exported.stdout

    refused = await run_cli("sessions", "import", "--dsn", db, str(to_file))
    assert_error(refused.returncode, refused.stderr, "session_exists")
    assert "--replace" in refused.stderr

    deleted = await run_cli("sessions", "delete", "--dsn", db, "alpha")
    assert deleted.returncode == 0, deleted.stderr
    gone = await run_cli("sessions", "show", "--dsn", db, "alpha")
    assert_error(gone.returncode, gone.stderr, "session_not_found")

    imported = await run_cli("sessions", "import", "--dsn", db, str(to_file))
    assert imported.returncode == 0, imported.stderr
    assert "alpha" in imported.stdout
    again = await run_cli("sessions", "export", "--dsn", db, "alpha")
    assert again.stdout == exported.stdout

    replaced = await run_cli("sessions", "import", "--dsn", db, "--replace", "-",
                             stdin=exported.stdout.encode("utf-8"))
    assert replaced.returncode == 0, replaced.stderr


async def test_import_creates_the_schema_in_a_new_database(db: str, tmp_path: Path) -> None:
    exported = await run_cli("sessions", "export", "--dsn", db, "alpha")
    fresh = tmp_path / "fresh.db"
    imported = await run_cli("sessions", "import", "--dsn", f"sqlite:///{fresh}", "-",
                             stdin=exported.stdout.encode("utf-8"))
    assert imported.returncode == 0, imported.stderr
    again = await run_cli("sessions", "export", "--dsn", str(fresh), "alpha")
    assert again.stdout == exported.stdout


async def test_import_rejects_what_is_not_an_export(db: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"hello": 1}\n', "utf-8")
    result = await run_cli("sessions", "import", "--dsn", db, str(junk))
    assert_error(result.returncode, result.stderr, "invalid_argument")
    missing = await run_cli("sessions", "import", "--dsn", db, str(tmp_path / "nope.jsonl"))
    assert_error(missing.returncode, missing.stderr, "invalid_argument")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    undecodable = await run_cli("sessions", "import", "--dsn", db, str(binary))
    assert_error(undecodable.returncode, undecodable.stderr, "invalid_argument")


async def test_missing_session_is_an_error_not_a_traceback(db: str, tmp_path: Path) -> None:
    for action in ("show", "delete", "export"):
        result = await run_cli("sessions", action, "--dsn", db, "nope")
        assert_error(result.returncode, result.stderr, "session_not_found")
        assert result.stderr == "error [session_not_found]: session 'nope' does not exist\n"
        assert result.stdout == ""
    target = tmp_path / "nope.jsonl"
    result = await run_cli("sessions", "export", "--dsn", db, "nope", "-o", str(target))
    assert_error(result.returncode, result.stderr, "session_not_found")
    assert files_in(tmp_path) == ["app.db"]  # no partial export left behind


# -- prune / vacuum --------------------------------------------------------------------


async def test_prune_deletes_only_old_sessions(db: str, tmp_path: Path) -> None:
    exported = await run_cli("sessions", "export", "--dsn", db, "alpha")
    header, session, *rest = exported.stdout.rstrip("\n").split("\n")
    row = json.loads(session)
    row["row"]["id"] = "old"
    row["row"]["updated_at"] = row["row"]["created_at"] = 1_577_836_800_000_000  # 2020-01-01
    for i, line in enumerate(rest):
        item = json.loads(line)
        item["row"]["session_id"] = "old"
        rest[i] = json.dumps(item)
    old = json.dumps({**json.loads(header), "session_id": "old"})
    file = tmp_path / "old.jsonl"
    file.write_text("\n".join([old, json.dumps(row), *rest]) + "\n", "utf-8")
    assert (await run_cli("sessions", "import", "--dsn", db, str(file))).returncode == 0

    kept = await run_cli("prune", "--dsn", db, "--older-than", "2019-06-01")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("pruned 0 sessions ")
    pruned = await run_cli("prune", "--dsn", db, "--older-than", "30d")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 1 session not updated since ")
    listed = await run_cli("sessions", "list", "--dsn", db, "--json")
    assert {s["id"] for s in json.loads(listed.stdout)} == {"alpha", "beta"}


@pytest.mark.parametrize("age", ["12h", "90d", "2w", "45m", "30s", "2020-01-01",
                                 "2020-01-01T10:00:00+02:00"])
async def test_prune_accepts_ages_and_dates(db: str, age: str) -> None:
    result = await run_cli("prune", "--dsn", db, "--older-than", age)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned 0 sessions")


@pytest.mark.parametrize("age", ["0d", "5x", "d30", "2999-01-01", ""])
async def test_prune_rejects_bad_ages(db: str, age: str) -> None:
    result = await run_cli("prune", "--dsn", db, "--older-than", age)
    assert result.returncode == 2
    assert "--older-than" in result.stderr and "Traceback" not in result.stderr


async def test_vacuum(db: str) -> None:
    result = await run_cli("vacuum", "--dsn", db)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "vacuumed the sqlite store (prefix 'pl_')\n"
    listed = await run_cli("sessions", "list", "--dsn", db, "--json")
    assert len(json.loads(listed.stdout)) == 2


# -- configuration errors --------------------------------------------------------------


async def test_no_dsn_is_an_error() -> None:
    result = await run_cli("sessions", "list")
    assert_error(result.returncode, result.stderr, "invalid_dsn")
    assert "POWER_LOOP_DSN" in result.stderr


@pytest.mark.parametrize("dsn", ["oracle://u@h/db", "sqlite:///x.db?bogus=1",
                                 "postgresql://u@h/db?pool_min_size=5&pool_max_size=2"])
async def test_bad_dsn_is_an_error(dsn: str) -> None:
    result = await run_cli("vacuum", "--dsn", dsn)
    assert_error(result.returncode, result.stderr, "invalid_dsn")


async def test_verify_commands_do_not_create_a_sqlite_file(tmp_path: Path) -> None:
    typo = tmp_path / "tyop.db"
    result = await run_cli("sessions", "list", "--dsn", str(typo))
    assert_error(result.returncode, result.stderr, "invalid_dsn")
    assert not typo.exists()


async def test_verify_reports_missing_tables_with_the_ddl(db: str) -> None:
    result = await run_cli("sessions", "list", "--dsn", db, "--prefix", "other_")
    assert_error(result.returncode, result.stderr, "schema_missing")
    assert 'CREATE TABLE IF NOT EXISTS "other_sessions"' in result.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert not any(t.startswith("other_") for t in tables)


@pytest.mark.parametrize("dsn", [
    "postgresql://bob:{pw}@127.0.0.1:1/db?connect_timeout=2",
    "mysql://bob:{pw}@127.0.0.1:1/db?connect_timeout=2",
    "postgresql://bob:{pw}@127.0.0.1:1/db?pool_max_size=0",
    "mysql://bob:{pw}@127.0.0.1:notaport/db",
    "oracle://bob:{pw}@127.0.0.1/db",
    "postgresql://bob@127.0.0.1:1/db?password={pw}&connect_timeout=2",
])
async def test_the_password_is_never_printed(dsn: str) -> None:
    dsn = dsn.format(pw=SECRET)
    for env in (cli_env(), cli_env(POWER_LOOP_DSN=dsn)):
        args = ("vacuum",) if "POWER_LOOP_DSN" in env else ("vacuum", "--dsn", dsn)
        result = await run_cli(*args, env=env)
        assert result.returncode == 2, result.output
        assert result.stderr.startswith("error ["), result.stderr
        assert SECRET not in result.output
