"""A store nobody closes: a ResourceWarning, its connections released, and the process
still exits, on every backend."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import warnings

from power_loop import ScriptedLLM, StatefulAgentLoop, Store, open_store
from power_loop.testing import drop_store_tables
from tests.cli_support import REPO

UNCLOSED = "unclosed power_loop store"


def _collected_warnings(drop: list[object]) -> list[str]:
    """Drop the last references to what ``drop`` holds; the ResourceWarnings raised."""
    gc.collect()  # earlier garbage first, so that only this drop is heard
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drop.clear()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def _drop_tables(dsn: str, prefix: str) -> None:
    async with await open_store(dsn, table_prefix=prefix) as store:
        await drop_store_tables(store)


async def test_an_unclosed_store_warns_and_lets_go(dsn: str, table_prefix: str) -> None:
    threads_before = set(threading.enumerate())
    held: list[object] = [await open_store(dsn, table_prefix=table_prefix)]
    store = held[0]
    assert isinstance(store, Store)
    await store.create_session("s")
    del store
    started = [t for t in set(threading.enumerate()) - threads_before
               if not t.name.startswith("asyncio_")]

    shown = _collected_warnings(held)

    assert len(shown) == 1, shown  # ours alone: no driver connection was left to warn
    assert shown[0].startswith(UNCLOSED)
    assert "await store.aclose()" in shown[0]
    for thread in started:  # SQLite's connection threads stop
        thread.join(timeout=30)
        assert not thread.is_alive()
    # Nothing is held: the tables can be dropped (SQLite: the file written) at once.
    await _drop_tables(dsn, table_prefix)


async def test_a_loop_that_opened_its_store_warns_unclosed(dsn: str,
                                                           table_prefix: str) -> None:
    loop = StatefulAgentLoop(llm=ScriptedLLM(["hi"]), dsn=dsn, table_prefix=table_prefix)
    session_id = await loop.new_session()
    await loop.send("hello", session_id=session_id)
    held: list[object] = [loop]
    del loop

    shown = _collected_warnings(held)

    assert [m for m in shown if m.startswith(UNCLOSED)] == shown and len(shown) == 1
    assert "loop.aclose()" in shown[0]
    await _drop_tables(dsn, table_prefix)


async def test_a_closed_store_warns_nothing(dsn: str, table_prefix: str) -> None:
    store = await open_store(dsn, table_prefix=table_prefix)
    await drop_store_tables(store)
    await store.aclose()
    held: list[object] = [store]
    del store

    shown = _collected_warnings(held)

    assert shown == []


def test_a_process_that_forgets_to_close_still_exits(dsn: str, table_prefix: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A hang in thread shutdown shows as TimeoutExpired; a minute is far beyond a run.
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "tests.forgetful_child",
         dsn, table_prefix],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sent: hello back", "asyncio.run returned"]
    assert done.stderr.count(UNCLOSED) == 2, done.stderr  # the store and the loop's
    asyncio.run(_drop_tables(dsn, table_prefix))
