"""A child process for the workflow durability tests.

Run as ``python -m tests.durability.workflow_child '<json>'`` (see :class:`WorkflowArgs`).
It starts a workflow and waits for its output, or resumes one (retrying while a dead
executor's lease has not expired). Every leaf's model call is appended to ``calls``.
It writes its report to ``out`` and exits 0; a crash point or SIGKILL leaves no report.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from power_loop import WorkflowBusyError, open_store
from tests.workflows.support import LeafModel


@dataclass(frozen=True, slots=True)
class WorkflowArgs:
    dsn: str
    prefix: str
    workflow_id: str
    op: str
    spec: dict[str, Any]
    input: Any
    calls: str
    out: str
    lease_ttl: float = 1.0
    delays: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


async def run(args: WorkflowArgs) -> dict[str, Any]:
    model = LeafModel(calls_file=args.calls, delays=args.delays)
    async with await open_store(args.dsn, table_prefix=args.prefix) as store:
        loop = model.loop(store, lease_ttl=args.lease_ttl)
        if args.op == "start":
            workflow_id = await loop.start_workflow(args.spec, args.input, args.workflow_id)
            executor = "finished"
            task = loop._workflow_tasks.get(workflow_id)  # type: ignore[attr-defined]
            if task is not None:
                try:
                    await task
                except Exception as exc:  # how this process's executor ended
                    executor = type(exc).__name__
            return {"output": await loop.wait_workflow(workflow_id), "executor": executor}
        while True:
            try:
                return {"output": await loop.resume_workflow(args.workflow_id)}
            except WorkflowBusyError:
                await asyncio.sleep(0.1)  # the dead executor's lease has not expired


def main(argv: list[str]) -> int:
    args = WorkflowArgs(**json.loads(argv[1]))
    try:
        report = asyncio.run(run(args))
        code = 0
    except Exception as exc:
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(report))
    tmp.replace(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
