"""Store errors say what happened: each cause its own code and a message saying what to
do; none of them is "connection lost, check that the server is up"."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from random import Random
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import (
    ConnectionLostError,
    DatabaseNotFoundError,
    PacketTooLargeError,
    PowerLoopError,
    SchemaPolicy,
    Store,
    StoreAuthenticationError,
    StoreFileCorruptError,
    StoreFileError,
    TransientStoreError,
    open_store,
)
from power_loop.store import NewMessage
from power_loop.testing import drop_store_tables
from tests.cli_support import run_cli

SECRET = "n0t-The-Pa55w0rd"


def _with(dsn: str, *, userinfo: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    if userinfo is not None:
        parts = parts._replace(netloc=f"{userinfo}@{parts.hostname}:{parts.port}")
    if database is not None:
        parts = parts._replace(path=f"/{database}")
    return parts.geturl()


def _never_connection_lost(error: PowerLoopError) -> None:
    assert not isinstance(error, ConnectionLostError)
    assert "check that the server is up" not in error.message


# -- logins and databases (the server engines) ------------------------------------------


_WRONG_LOGINS = {
    # The testbed's PostgreSQL trusts every existing role: an unknown role is the login
    # it refuses. MariaDB checks passwords: a wrong one, and an unknown user.
    "postgresql": ["no_such_role_pl", f"no_such_role_pl:{SECRET}"],
    "mysql": [f"pl:{SECRET}", f"no_such_user_pl:{SECRET}"],
}


@pytest.mark.backends("postgresql", "mysql")
async def test_a_refused_login_is_an_authentication_error(backend: str, dsn: str) -> None:
    for userinfo in _WRONG_LOGINS[backend]:
        with pytest.raises(StoreAuthenticationError) as info:
            await open_store(_with(dsn, userinfo=userinfo), connect_timeout=5)

        error = info.value
        assert (error.code, error.backend) == ("store_authentication", backend)
        assert "check the user and password in the DSN" in error.message
        assert SECRET not in error.message
        _never_connection_lost(error)


@pytest.mark.backends("postgresql", "mysql")
async def test_a_database_that_does_not_exist(backend: str, dsn: str) -> None:
    with pytest.raises(DatabaseNotFoundError) as info:
        await open_store(_with(dsn, database="no_such_db_pl"), connect_timeout=5)

    error = info.value
    assert (error.code, error.backend, error.database) == (
        "database_not_found", backend, "no_such_db_pl")
    assert "CREATE DATABASE" in error.message and "no_such_db_pl" in error.message
    _never_connection_lost(error)


@pytest.mark.backends("postgresql", "mysql")
async def test_an_unreachable_server_is_still_connection_lost(backend: str) -> None:
    # The one cause that is about the network keeps its code.
    with pytest.raises(ConnectionLostError) as info:
        await open_store(f"{backend}://u@127.0.0.1:1/db", connect_timeout=5)
    assert info.value.code == "connection_lost"


# -- SQLite files ------------------------------------------------------------------------


@pytest.mark.backends("sqlite")
async def test_a_missing_directory_is_named(backend: str, tmp_path: Path) -> None:
    path = tmp_path / "not" / "there" / "app.db"

    with pytest.raises(StoreFileError) as info:
        await open_store(str(path))

    error = info.value
    assert (error.code, error.path) == ("store_file", str(path))
    assert f"the directory {path.parent} does not exist" in error.message
    _never_connection_lost(error)
    assert not (tmp_path / "not").exists()


@pytest.mark.backends("sqlite")
async def test_a_directory_is_not_a_database_file(backend: str, tmp_path: Path) -> None:
    with pytest.raises(StoreFileError) as info:
        await open_store(str(tmp_path))

    assert info.value.code == "store_file"
    assert "it is a directory" in info.value.message
    assert str(tmp_path / "app.db") in info.value.message


def _drop_side_files(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _damage(path: Path, marker: bytes) -> None:
    """Make every copy of ``marker`` in the file invalid UTF-8, keeping its length."""
    raw = path.read_bytes()
    assert raw.count(marker) >= 1
    path.write_bytes(raw.replace(marker, b"\xff\xfe" + marker[2:]))


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` made unwritable for this process, even as root (immutable)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False,
                                        capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is unavailable: nothing is read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.backends("sqlite")
async def test_a_read_only_file_is_named(backend: str, dsn: str) -> None:
    async with await open_store(dsn) as store:
        await store.create_session("kept")
    _drop_side_files(Path(dsn))

    with _read_only(Path(dsn)):
        # A WAL file opens and reads (the -shm file is made in the directory)...
        async with await open_store(dsn) as store:
            assert (await store.get_session("kept")).id == "kept"
            with pytest.raises(StoreFileError) as info:  # ...and refuses to be written
                await store.create_session("new")

    assert info.value.code == "store_file"
    assert "is read-only" in info.value.message and "write permission" in info.value.message
    _never_connection_lost(info.value)
    async with await open_store(dsn) as store:  # untouched
        assert (await store.get_session("kept")).id == "kept"


# At least a page: SQLite takes a file shorter than its 100-byte header for an empty one.
_GARBAGE = st.binary(min_size=512, max_size=8192).filter(
    lambda b: not b.startswith(b"SQLite format 3"))


@pytest.mark.backends("sqlite")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_GARBAGE)
def test_a_file_of_random_bytes_is_refused_without_quoting_it(
        backend: str, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(content)
    _drop_side_files(path)

    with pytest.raises(StoreFileCorruptError) as info:
        asyncio.run(open_store(str(path)))

    error = info.value
    assert (error.code, error.path) == ("store_file_corrupt", str(path))
    assert "restore the file from a backup" in error.message
    assert error.message.isprintable()
    assert path.read_bytes() == content  # nothing was written into it


@pytest.mark.backends("sqlite")
async def test_damaged_text_is_never_copied_into_the_message(backend: str, dsn: str) -> None:
    marker = "MARKERq7Zx"
    async with await open_store(dsn, table_prefix="pl_") as store:
        await store.create_session("s")
        await store.append_messages("s", [NewMessage(0, "user", {"text": marker * 4})])
    _damage(Path(dsn), marker.encode())

    async with await open_store(dsn, table_prefix="pl_",
                                schema=SchemaPolicy.NONE) as store:
        with pytest.raises(StoreFileCorruptError) as info:
            await store.read_messages("s")

    assert info.value.code == "store_file_corrupt"
    assert marker[2:] not in info.value.message
    assert "\ufffd" not in info.value.message


@pytest.mark.backends("sqlite")
async def test_a_damaged_schema_is_never_quoted(backend: str, dsn: str) -> None:
    async with await open_store(dsn) as store:
        await store.create_session("s")
    _damage_schema(Path(dsn))

    with pytest.raises(StoreFileCorruptError) as info:
        async with await open_store(dsn):
            pass

    # SQLite's text quotes the damaged statement ("near \"CR\\xffATE\"": syntax error").
    assert info.value.code == "store_file_corrupt"
    assert "syntax error" not in info.value.message and "0xff" not in info.value.message


def _damage_schema(path: Path) -> None:
    """One byte of the first CREATE TABLE in the schema made invalid UTF-8."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"CREATE TABLE")
    assert at >= 0
    raw[at + 2] = 0xFF
    path.write_bytes(bytes(raw))


_MARKER = "Zq8MARKERw"
# Where to write noise: often into page 1 after the header (the schema's own text),
# otherwise anywhere (taken modulo the file's length); the noise is uniform bytes, as a
# damaged disk writes them (hypothesis's own binary() favours zeros, which decode).
_DAMAGE = st.lists(st.tuples(st.one_of(st.integers(100, 4095), st.integers(0, 1 << 20)),
                             st.integers(1, 64), st.randoms(use_true_random=False)),
                   min_size=1, max_size=20)


@pytest.fixture(scope="module")
def intact_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a closed SQLite store holding sessions full of a marker text."""
    path = tmp_path_factory.mktemp("intact") / "intact.db"

    async def build() -> None:
        async with await open_store(str(path)) as store:
            for i in range(3):
                await store.create_session(f"s{i}")
                await store.append_messages(
                    f"s{i}", [NewMessage(0, "user", {"text": _MARKER * 50})] * 5)

    asyncio.run(build())
    return path.read_bytes()


async def _read_everything(path: Path) -> None:
    async with await open_store(str(path)) as store:
        for session in await store.list_sessions():
            await store.read_messages(session.id)


@pytest.mark.backends("sqlite")
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_DAMAGE)
def test_a_damaged_file_never_leaks_its_bytes(backend: str, tmp_path: Path,
                                              intact_store: bytes,
                                              damage: list[tuple[int, int, Random]]
                                              ) -> None:
    data = bytearray(intact_store)
    for where, length, noise in damage:
        at = where % len(data)
        data[at:at + length] = noise.randbytes(length)[:len(data) - at]
    path = tmp_path / "damaged.db"
    path.write_bytes(bytes(data))
    _drop_side_files(path)

    try:
        asyncio.run(_read_everything(path))
    except PowerLoopError as error:  # anything else escapes: a failure to map it
        assert error.message.isprintable()
        assert _MARKER[3:9] not in error.message
        assert "byte 0x" not in error.message and "\\x" not in error.message
    finally:
        _drop_side_files(path)


# -- MySQL's max_allowed_packet ------------------------------------------------------------


async def _server_packet_limit(store: Store) -> int:
    async with store._database.transaction(write=False) as conn:
        row = await conn.fetchone("SELECT @@max_allowed_packet")
    assert row is not None
    return int(row[0])


@pytest.mark.backends("mysql")
async def test_a_message_over_max_allowed_packet_is_named(backend: str, store: Store) -> None:
    limit = await _server_packet_limit(store)
    await store.create_session("s")
    await store.append_messages("s", [NewMessage(0, "user", {"text": "before"})])

    too_big: dict[str, Any] = {"text": "x" * (limit + 1)}
    with pytest.raises(PacketTooLargeError) as info:
        await store.append_messages("s", [NewMessage(0, "user", too_big)])
    del too_big

    error = info.value
    assert (error.code, error.backend, error.limit) == ("store_packet_too_large", "mysql",
                                                        limit)
    assert error.size is not None and error.size > limit
    assert "max_allowed_packet" in error.message and "nothing was written" in error.message
    # Nothing half-written: the session and its one message are as they were.
    assert [m.body for m in await store.read_messages("s")] == [{"text": "before"}]
    assert (await store.get_session("s")).next_seq == 1
    await store.append_messages("s", [NewMessage(0, "assistant", {"text": "after"})])


# -- asyncpg's command timeout --------------------------------------------------------------


@pytest.mark.backends("postgresql")
async def test_a_command_timeout_leaves_no_unretrieved_future(backend: str, dsn: str,
                                                              table_prefix: str) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        store = await open_store(dsn, table_prefix=table_prefix, command_timeout=0.2)
        try:
            for _ in range(3):
                with pytest.raises(TransientStoreError) as info:
                    async with store._database.transaction() as conn:
                        await conn.fetch("SELECT pg_sleep(30)")
                assert "command_timeout=0.2" in info.value.message
            await store.create_session("after")  # the pool still works
        finally:
            await drop_store_tables(store)
            await store.aclose()
        gc.collect()  # an unretrieved future reports itself when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


# -- the command line --------------------------------------------------------------------


def _cli_case(backend: str, dsn: str, tmp_path: Path) -> tuple[list[str], str, str]:
    """Arguments for ``power-loop sessions list``, the code and advice it must print."""
    if backend == "sqlite":
        missing = tmp_path / "gone" / "app.db"
        return (["--dsn", str(missing), "--schema", "auto_create"], "store_file",
                f"the directory {missing.parent} does not exist")
    if backend == "postgresql":
        return (["--dsn", _with(dsn, database="no_such_db_pl")], "database_not_found",
                "CREATE DATABASE no_such_db_pl")
    return (["--dsn", _with(dsn, userinfo=f"pl:{SECRET}")], "store_authentication",
            "check the user and password in the DSN")


async def test_the_cli_prints_the_cause(backend: str, dsn: str, tmp_path: Path) -> None:
    args, code, advice = _cli_case(backend, dsn, tmp_path)

    done = await run_cli("sessions", "list", *args)

    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]: "), done.stderr
    assert advice in lines[0]
    assert SECRET not in done.output and "check that the server is up" not in done.output
