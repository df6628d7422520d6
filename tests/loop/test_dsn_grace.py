"""A ``dsn=`` loop per request reuses the process's store: it stays open for a grace
period after the last loop closes, then closes, and closes when its event loop shuts
down, without a warning, on every backend."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from power_loop import InvalidArgumentError, ScriptedLLM, StatefulAgentLoop, Store
from power_loop.store.shared import idle_stores, shared_stores
from power_loop.testing import drop_store_tables
from tests.cli_support import REPO

UNCLOSED = "unclosed power_loop store"


def dsn_loop(dsn: str, prefix: str, grace: float) -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(lambda r: f"seen {len(r.messages)}"), dsn=dsn,
                             table_prefix=prefix, store_grace=grace)


async def until(condition: object, what: str) -> None:
    """Wait (up to 30 s) for ``condition()`` to hold."""
    assert callable(condition)
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_loop_within_the_grace_reuses_the_store(dsn: str, table_prefix: str,
                                                        store: Store) -> None:
    shared, idle = shared_stores(), idle_stores()
    async with dsn_loop(dsn, table_prefix, 3600) as first:
        sid = await first.new_session()
        await first.send("one", session_id=sid)
        held = first.store
    assert (shared_stores(), idle_stores()) == (shared + 1, idle + 1)  # open, idle
    async with dsn_loop(dsn, table_prefix, 3600) as second:
        assert second.store is held
        assert idle_stores() == idle  # taken again: no longer idle
        result = await second.send("two", session_id=sid)
    assert result.send_index == 1 and result.final_text == "seen 3"
    assert held.window_cache.stats().hits == 1  # the second request found the window


async def test_after_the_grace_the_store_is_closed_and_a_new_one_opened(
        dsn: str, table_prefix: str, store: Store) -> None:
    shared = shared_stores()
    async with dsn_loop(dsn, table_prefix, 0.05) as first:
        sid = await first.new_session()
        await first.send("one", session_id=sid)
        held = first.store
    await until(lambda: shared_stores() == shared, "the idle store to close")
    async with dsn_loop(dsn, table_prefix, 0.05) as second:
        assert second.store is not held
        result = await second.send("two", session_id=sid)
    assert result.send_index == 1


async def test_grace_zero_closes_with_the_last_loop(dsn: str, table_prefix: str,
                                                    store: Store) -> None:
    shared = shared_stores()
    async with dsn_loop(dsn, table_prefix, 0) as loop:
        await loop.new_session()
    assert shared_stores() == shared


def test_the_event_loop_shutting_down_closes_an_idle_store(dsn: str,
                                                           table_prefix: str) -> None:
    async def serve() -> Store:
        async with dsn_loop(dsn, table_prefix, 3600) as loop:
            sid = await loop.new_session()
            await loop.send("hello", session_id=sid)
            return loop.store

    shared, idle = shared_stores(), idle_stores()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        held = [asyncio.run(serve())]
        assert (shared_stores(), idle_stores()) == (shared, idle)  # closed by the shutdown
        held.clear()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []

    async def drop() -> None:
        async with dsn_loop(dsn, table_prefix, 0) as loop:
            await drop_store_tables(await loop._get_store())

    asyncio.run(drop())


CHILD = """
import asyncio, sys
from power_loop import ScriptedLLM, StatefulAgentLoop

async def main():
    async with StatefulAgentLoop(llm=ScriptedLLM(["hi"]), dsn=sys.argv[1],
                                 table_prefix=sys.argv[2], store_grace=3600) as loop:
        await loop.send("hello", session_id=await loop.new_session())

# An event loop never shut down: the idle store is still the registry's at exit.
asyncio.new_event_loop().run_until_complete(main())
print("done", flush=True)
"""


def test_an_idle_store_at_exit_is_released_without_a_warning(dsn: str,
                                                            table_prefix: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", CHILD, dsn, table_prefix],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["done"]
    assert UNCLOSED not in done.stderr, done.stderr

    async def drop() -> None:
        async with dsn_loop(dsn, table_prefix, 0) as loop:
            await drop_store_tables(await loop._get_store())

    asyncio.run(drop())


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "30", True])
def test_a_bad_grace_is_refused(grace: object) -> None:
    with pytest.raises(InvalidArgumentError, match="store_grace"):
        StatefulAgentLoop(llm=ScriptedLLM(["hi"]), dsn="x.db",
                          store_grace=grace)  # type: ignore[arg-type]


async def test_a_relative_sqlite_path_is_another_store_in_another_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dsn="app.db"`` names a file in the current directory: after a chdir, the idle
    store of the first directory is not reused, and the new file gets its tables."""
    stores = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        async with dsn_loop("app.db", "pl_", 3600) as loop:
            sid = await loop.new_session()
            result = await loop.send("hello", session_id=sid)
            stores.append(loop.store)
        assert result.send_index == 0 and (tmp_path / name / "app.db").exists()
    assert stores[0] is not stores[1]
