"""Engine errors become the same power_loop error on every backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conformance.probes import count_rows
from power_loop import (
    ConnectionLostError,
    IntegrityConflictError,
    Store,
    StoreAuthenticationError,
    StoreFileError,
    open_store,
)

SECRET = "wr0ng-Pa55"


async def _insert_message(store: Store, values: list[object]) -> None:
    dialect = store._database.dialect
    table = dialect.quote(f"{store.table_prefix}messages")
    sql = dialect.render(f"INSERT INTO {table} (session_id, seq, send_index, role, body, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?)")
    async with store._database.transaction() as conn:
        await conn.execute(sql, values)


async def test_a_not_null_violation_is_an_integrity_conflict(store: Store) -> None:
    await store.create_session("s")

    with pytest.raises(IntegrityConflictError) as info:
        await _insert_message(store, ["s", 0, 0, None, "{}", 0])

    assert info.value.code == "store_conflict"
    assert await count_rows(store, "messages") == 0


async def test_a_duplicate_key_is_an_integrity_conflict(store: Store) -> None:
    await store.create_session("s")
    await _insert_message(store, ["s", 0, 0, "user", "{}", 0])

    with pytest.raises(IntegrityConflictError) as info:
        await _insert_message(store, ["s", 0, 0, "user", "{}", 0])

    assert info.value.code == "store_conflict"
    assert await count_rows(store, "messages") == 1


def _with_user(dsn: str, userinfo: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{userinfo}@{parts.hostname}:{parts.port}").geturl()


_REFUSED_LOGINS = {  # the server answers, and refuses the login
    "postgresql": ["no_such_role_pl", f"no_such_role_pl:{SECRET}"],
    "mysql": [f"pl:{SECRET}", f"no_such_user_pl:{SECRET}"],
}


async def test_refused_credentials_are_an_authentication_error(backend: str, dsn: str,
                                                               tmp_path: Path) -> None:
    if backend not in _REFUSED_LOGINS:
        # A SQLite file has no logins; its counterpart is a file that cannot be opened.
        with pytest.raises(StoreFileError) as file_info:
            await open_store(str(tmp_path), table_prefix="pl_")  # a directory
        assert file_info.value.code == "store_file" and file_info.value.backend == "sqlite"
        assert "it is a directory" in file_info.value.message
        return

    for userinfo in _REFUSED_LOGINS[backend]:
        with pytest.raises(StoreAuthenticationError) as info:
            await open_store(_with_user(dsn, userinfo), table_prefix="pl_", connect_timeout=5)

        assert info.value.code == "store_authentication"
        assert info.value.backend == backend
        assert "check the user and password in the DSN" in info.value.message
        assert SECRET not in str(info.value)
        assert not isinstance(info.value, ConnectionLostError)
