"""PostgreSQL's connection pool (power_loop/store/postgres/pool.py), on the real server:
a connection never comes back inside a transaction, at most ``pool_max_size`` are open,
a waiting task gets the next one given back, and a connection the server dropped is
replaced."""

from __future__ import annotations

import asyncio

import pytest

from power_loop import open_store
from power_loop.store.postgres.driver import PostgresDatabase

pytestmark = pytest.mark.backends("postgresql")


async def _backend_pid(db: PostgresDatabase) -> int:
    async with db.transaction(write=False) as conn:
        row = await conn.fetchone("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


async def test_a_transaction_whose_rollback_is_cut_off_is_rolled_back(backend: str,
                                                                   dsn: str) -> None:
    store = await open_store(dsn, pool_min_size=1, pool_max_size=1)
    try:
        db = store._database
        assert isinstance(db, PostgresDatabase)
        started = asyncio.Event()

        async def long_transaction() -> None:
            async with db.transaction() as conn:
                await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pl_cut (x int)")
                started.set()
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(long_transaction())
        await started.wait()
        task.cancel()
        # The task runs up to its ROLLBACK (waiting out the cancelled statement) before
        # this one runs again: cancelled once more, its own ROLLBACK never runs.
        await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The pool's one connection: outside any transaction, so a read-only
        # transaction can set its isolation level, and the temp table was rolled back.
        async with db.transaction(write=False) as conn:
            row = await conn.fetchone("SELECT to_regclass('pg_temp.pl_cut') IS NULL")
        assert row is not None and row[0] is True
    finally:
        await store.aclose()


async def test_an_autocommit_statement_cut_off_leaves_the_connection_usable(
        backend: str, dsn: str) -> None:
    store = await open_store(dsn, pool_min_size=1, pool_max_size=1)
    try:
        db = store._database
        assert isinstance(db, PostgresDatabase)

        async def slow() -> None:
            async with db.autocommit() as conn:
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(slow())
        for _ in range(100):  # until the statement is on its way
            await asyncio.sleep(0.01)
            if not db._pool._idle:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.autocommit() as conn:
            assert await conn.fetchone("SELECT 1") == (1,)
    finally:
        await store.aclose()


async def test_at_most_max_size_connections_and_waiters_are_served(backend: str,
                                                                  dsn: str) -> None:
    store = await open_store(dsn, pool_min_size=0, pool_max_size=2)
    try:
        db = store._database
        assert isinstance(db, PostgresDatabase)
        inside = 0
        most = 0
        pids: set[int] = set()
        gate = asyncio.Event()

        async def one() -> None:
            nonlocal inside, most
            async with db.transaction(write=False) as conn:
                inside += 1
                most = max(most, inside)
                if most == 2:
                    gate.set()
                await gate.wait()
                row = await conn.fetchone("SELECT pg_backend_pid()")
                assert row is not None
                pids.add(int(row[0]))
                inside -= 1

        await asyncio.gather(*(one() for _ in range(8)))
        assert most == 2
        assert len(pids) == 2
    finally:
        await store.aclose()


async def test_a_connection_the_server_dropped_is_replaced(backend: str, dsn: str) -> None:
    store = await open_store(dsn, pool_min_size=1, pool_max_size=1)
    killer = await open_store(dsn, pool_min_size=1, pool_max_size=1)
    try:
        db = store._database
        assert isinstance(db, PostgresDatabase)
        pid = await _backend_pid(db)
        async with killer._database.autocommit() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", [pid])
        for _ in range(200):  # until the client has seen its connection go
            if db._pool._idle[0].is_closed():
                break
            await asyncio.sleep(0.01)
        assert await _backend_pid(db) != pid
    finally:
        await killer.aclose()
        await store.aclose()
