"""The workflow journal: one row per workflow, one per step execution, one per signal.

Every write an executor makes is fenced: it first bumps the workflow row ``WHERE
lease_epoch = <its epoch>``, in the same transaction. That also locks the row, so
writes to one workflow are serialized, and a zombie executor (its lease expired and
taken over) writes nothing. A step's outcome is recorded check-then-record: a step
already ``done`` keeps its first outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from power_loop.errors import (
    WorkflowBusyError,
    WorkflowLeaseLostError,
    WorkflowNotFoundError,
)
from power_loop.store.port import Connection, Row
from power_loop.store.records import dump_json, load_json
from power_loop.store.store import Store

_WF = ("workflow_id, spec, spec_hash, input, status, output, error, lease_owner, "
       "lease_epoch, lease_expires_at, attempts, parked_at, created_at, updated_at")
_STEP = "path, kind, status, output, child_session, due_at, epoch"


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow's row."""

    workflow_id: str
    spec: dict[str, Any]
    spec_hash: str
    input: Any
    status: str
    output: Any
    error: Any
    lease_owner: str | None
    lease_epoch: int
    attempts: int
    parked: bool


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step execution, keyed by its structural path.

    Attributes:
        path: The step's JSON pointer in the spec, ``@k`` marking foreach item ``k``.
        kind: ``agent``, ``wait`` or ``sleep``.
        status: ``running``, ``waiting``, ``sleeping``, ``done`` or ``failed``.
        output: Its outcome (a leaf's answer, a signal's payload).
        child_session: The leaf's child session.
        due_at: Microseconds (database clock) when a sleep ends or a wait times out.
    """

    path: str
    kind: str
    status: str
    output: Any
    child_session: str | None
    due_at: int | None
    epoch: int


def _wf(row: Row) -> WorkflowRecord:
    return WorkflowRecord(row[0], load_json(row[1]), row[2], load_json(row[3]), row[4],
                          None if row[5] is None else load_json(row[5]),
                          None if row[6] is None else load_json(row[6]), row[7],
                          int(row[8]), int(row[10]), row[11] is not None)


def _step(row: Row) -> StepRecord:
    return StepRecord(row[0], row[1], row[2], None if row[3] is None else load_json(row[3]),
                      row[4], None if row[5] is None else int(row[5]), int(row[6]))


class Journal:
    """The journal's statements over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        d, n = store._db.dialect, store._names
        r = d.render
        wf, st, sg = n.workflows, n.workflow_steps, n.workflow_signals
        self.q_insert = r(f"INSERT INTO {wf} ({_WF}) VALUES (?, ?, ?, ?, 'running', NULL, NULL, "
                        "NULL, 0, NULL, 0, NULL, {now}, {now})")
        self.q_get = r(f"SELECT {_WF} FROM {wf} WHERE workflow_id = ?")
        self.q_listing = r(f"SELECT {_WF} FROM {wf} ORDER BY created_at DESC, workflow_id "
                         "LIMIT ?")
        self.q_acquire = r(f"UPDATE {wf} SET lease_owner = ?, lease_epoch = lease_epoch + 1, "
                         "lease_expires_at = {now} + ?, attempts = attempts + ?, "
                         "updated_at = {now} WHERE workflow_id = ? AND status = 'running' "
                         "AND (lease_owner IS NULL OR lease_expires_at < {now})")
        self.q_fence = r(f"UPDATE {wf} SET lease_expires_at = {{now}} + ?, updated_at = {{now}} "
                       "WHERE workflow_id = ? AND lease_epoch = ? AND status = 'running'")
        self.q_finish = r(f"UPDATE {wf} SET status = ?, output = ?, error = ?, lease_owner = NULL,"
                        " lease_expires_at = NULL, attempts = 0, updated_at = {now} "
                        "WHERE workflow_id = ? AND lease_epoch = ? AND status = 'running'")
        self.q_set_spec = r(f"UPDATE {wf} SET spec = ?, spec_hash = ? WHERE workflow_id = ?")
        self.q_release = r(f"UPDATE {wf} SET lease_owner = NULL, lease_expires_at = NULL "
                         "WHERE workflow_id = ? AND lease_epoch = ?")
        self.q_cancel = r(f"UPDATE {wf} SET status = 'cancelled', lease_owner = NULL, "
                        "lease_expires_at = NULL, updated_at = {now} "
                        "WHERE workflow_id = ? AND status = 'running'")
        self.q_stranded = r(f"SELECT workflow_id FROM {wf} WHERE status = 'running' AND "
                          "parked_at IS NULL AND (lease_owner IS NULL OR lease_expires_at < "
                          "{now}) ORDER BY updated_at LIMIT ?")
        self.q_park = r(f"UPDATE {wf} SET parked_at = {{now}} WHERE workflow_id = ?")
        self.q_steps = r(f"SELECT {_STEP} FROM {st} WHERE workflow_id = ? ORDER BY path")
        self.q_step = r(f"SELECT {_STEP} FROM {st} WHERE workflow_id = ? AND path = ?")
        self.q_step_insert = r(f"INSERT INTO {st} (workflow_id, {_STEP}, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, {now}, {now})")
        self.q_step_update = r(f"UPDATE {st} SET status = ?, output = ?, epoch = ?, "
                             "updated_at = {now} WHERE workflow_id = ? AND path = ?")
        self.q_now = r("SELECT {now}")
        self.q_signal = r(f"SELECT payload FROM {sg} WHERE workflow_id = ? AND name = ?")
        self.q_signal_insert = r(f"INSERT INTO {sg} (workflow_id, name, payload, created_at) "
                               "VALUES (?, ?, ?, {now})")

    # -- the workflow row -----------------------------------------------------------------

    async def create(self, workflow_id: str, spec: dict[str, Any], digest: str,
                     value: Any) -> bool:
        """Record a new workflow; ``False`` when one with this id exists (kept as is)."""
        async def txn(conn: Connection) -> bool:
            if await conn.fetchone(self.q_get, [workflow_id]) is not None:
                return False
            await conn.execute(self.q_insert, [workflow_id, dump_json(spec), digest,
                                             dump_json(value)])
            return True
        return await self.store._write(txn)

    async def load(self, workflow_id: str) -> WorkflowRecord:
        row = await self.store._read(_fetchone, self.q_get, [workflow_id])
        if row is None:
            raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in this store",
                                        workflow_id=workflow_id)
        return _wf(row)

    async def recent(self, limit: int = 100) -> list[WorkflowRecord]:
        return [_wf(r) for r in await self.store._read(_fetch, self.q_listing, [limit])]

    async def acquire(self, workflow_id: str, ttl: float, *, count_attempt: bool) -> int:
        """Take the lease; return the new epoch (bumped: every earlier holder is fenced)."""
        owner = uuid.uuid4().hex

        async def txn(conn: Connection) -> int | None:
            changed = await conn.execute(self.q_acquire, [owner, int(ttl * 1e6),
                                                        1 if count_attempt else 0,
                                                        workflow_id])
            if not changed:
                return None
            row = await conn.fetchone(self.q_get, [workflow_id])
            assert row is not None
            return int(row[8])
        epoch = await self.store._write(txn)
        if epoch is None:
            record = await self.load(workflow_id)
            if record.status != "running":
                raise WorkflowBusyError(f"workflow {workflow_id!r} is {record.status}; "
                                        "there is nothing to run", workflow_id=workflow_id)
            raise WorkflowBusyError(f"workflow {workflow_id!r} is being run by another "
                                    "executor; wait for it, or resume after its lease "
                                    "expires", workflow_id=workflow_id)
        return epoch

    async def _fence(self, conn: Connection, workflow_id: str, epoch: int, ttl: float) -> None:
        if not await conn.execute(self.q_fence, [int(ttl * 1e6), workflow_id, epoch]):
            raise WorkflowLeaseLostError(
                f"workflow {workflow_id!r} was taken over (or ended) after this executor's "
                f"lease (epoch {epoch}); nothing was written", workflow_id=workflow_id)

    async def renew(self, workflow_id: str, epoch: int, ttl: float) -> None:
        await self.store._write(self._fence, workflow_id, epoch, ttl)

    async def finish(self, workflow_id: str, epoch: int, status: str, output: Any,
                     error: Any) -> None:
        async def txn(conn: Connection) -> None:
            if not await conn.execute(self.q_finish, [
                    status, None if output is None and status != "done" else dump_json(output),
                    None if error is None else dump_json(error), workflow_id, epoch]):
                raise WorkflowLeaseLostError(f"workflow {workflow_id!r} was taken over or "
                                             "ended; its outcome was not recorded",
                                             workflow_id=workflow_id)
        await self.store._write(txn)

    async def set_spec(self, workflow_id: str, epoch: int, ttl: float, spec: dict[str, Any],
                       digest: str) -> None:
        """Go on under another spec (the caller opted in); fenced."""
        async def txn(conn: Connection) -> None:
            await self._fence(conn, workflow_id, epoch, ttl)
            await conn.execute(self.q_set_spec, [dump_json(spec), digest, workflow_id])
        await self.store._write(txn)

    async def release(self, workflow_id: str, epoch: int) -> None:
        await self.store._write(_execute, self.q_release, [workflow_id, epoch])

    async def cancel(self, workflow_id: str) -> bool:
        await self.load(workflow_id)
        return bool(await self.store._write(_execute, self.q_cancel, [workflow_id]))

    async def stranded(self, limit: int) -> list[str]:
        return [r[0] for r in await self.store._read(_fetch, self.q_stranded, [limit])]

    async def park(self, workflow_id: str) -> None:
        await self.store._write(_execute, self.q_park, [workflow_id])

    # -- steps --------------------------------------------------------------------------

    async def steps(self, workflow_id: str) -> dict[str, StepRecord]:
        rows = await self.store._read(_fetch, self.q_steps, [workflow_id])
        return {r[0]: _step(r) for r in rows}

    async def begin_step(self, workflow_id: str, epoch: int, ttl: float, path: str, kind: str,
                         status: str, child: str | None, delay: float | None) -> StepRecord:
        """The step's row, made now (fenced) unless it exists: the existing one wins."""
        async def txn(conn: Connection) -> StepRecord:
            await self._fence(conn, workflow_id, epoch, ttl)
            row = await conn.fetchone(self.q_step, [workflow_id, path])
            if row is None:
                due = None
                if delay is not None:  # the database's clock, as leases use
                    clock = await conn.fetchone(self.q_now, [])
                    assert clock is not None
                    due = int(clock[0]) + int(delay * 1e6)
                await conn.execute(self.q_step_insert, [workflow_id, path, kind, status, None,
                                                      child, due, epoch])
                row = await conn.fetchone(self.q_step, [workflow_id, path])
                assert row is not None
            return _step(row)
        return await self.store._write(txn)

    async def record(self, workflow_id: str, epoch: int, ttl: float, path: str, status: str,
                     output: Any) -> StepRecord:
        """Record a step's outcome once: a step already done keeps its first outcome."""
        async def txn(conn: Connection) -> StepRecord:
            await self._fence(conn, workflow_id, epoch, ttl)
            row = await conn.fetchone(self.q_step, [workflow_id, path])
            assert row is not None, path
            if row[2] != "done":
                await conn.execute(self.q_step_update, [status, dump_json(output), epoch,
                                                      workflow_id, path])
                row = await conn.fetchone(self.q_step, [workflow_id, path])
                assert row is not None
            return _step(row)
        return await self.store._write(txn)

    async def now(self) -> int:
        row = await self.store._read(_fetchone, self.q_now, [])
        assert row is not None
        return int(row[0])

    # -- signals ------------------------------------------------------------------------

    async def signal(self, workflow_id: str, name: str, payload: Any) -> bool:
        """Record a signal; ``False`` when one of this name was recorded (first wins)."""
        async def txn(conn: Connection) -> bool:
            if await conn.fetchone(self.q_get, [workflow_id]) is None:
                raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in this store",
                                            workflow_id=workflow_id)
            if await conn.fetchone(self.q_signal, [workflow_id, name]) is not None:
                return False
            await conn.execute(self.q_signal_insert, [workflow_id, name, dump_json(payload)])
            return True
        return await self.store._write(txn)

    async def signalled(self, workflow_id: str, name: str) -> tuple[bool, Any]:
        row = await self.store._read(_fetchone, self.q_signal, [workflow_id, name])
        return (False, None) if row is None else (True, load_json(row[0]))


async def _fetch(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)


async def _fetchone(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    return await conn.fetchone(sql, args)


async def _execute(conn: Connection, sql: str, args: Sequence[Any]) -> int:
    return await conn.execute(sql, args)


