"""A child process for the sub-agent durability tests: a loop whose model delegates.

Run as ``python -m tests.durability.agent_child '<json>'`` (see :class:`AgentArgs`). The
model and the agents are :class:`tests.agents.support.TreeModel`'s for one plan: the
root starts its children, each leaf calls ``work`` (recording its start and its effect
in ``effects``) and answers. The child writes its result to ``out`` and exits 0; a crash
point (``POWER_LOOP_CRASH_AT``) or the test's SIGKILL ends it with no output at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from power_loop import open_store
from tests.agents.support import ROOT_TASK, Plan, TreeModel


@dataclass(frozen=True, slots=True)
class AgentArgs:
    """What one process does.

    Attributes:
        op: ``send`` (the root task to ``session_id``) or ``resume`` (``session_id``'s
            pending send: the root's, or a child's, which the root loop hands to the
            child agent's loop).
        plan: The tree of agents, as nested lists.
        safe: Whether the leaves' ``work`` tool is safe to repeat.
    """

    dsn: str
    prefix: str
    session_id: str
    op: str
    plan: list[Any]
    effects: str
    out: str
    safe: bool = False
    tool_sleep: float = 0.0
    lease_ttl: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def as_plan(nested: list[Any]) -> Plan:
    return tuple(as_plan(child) for child in nested)


async def run(args: AgentArgs) -> dict[str, Any]:
    model = TreeModel(as_plan(args.plan), effects=args.effects, tool_sleep=args.tool_sleep,
                      safe=args.safe)
    async with await open_store(args.dsn, table_prefix=args.prefix) as store:
        loop = model.loop(store, lease_ttl=args.lease_ttl)
        if args.op == "send":
            result = await loop.send(ROOT_TASK, args.session_id)
        else:
            resumed = await loop.resume(args.session_id)
            if resumed is None:
                return {"result": None}
            result = resumed
        return {"result": {"final_text": result.final_text, "status": result.status,
                           "usage": result.usage.to_json(),
                           "children_usage": result.children_usage.to_json()}}


def main(argv: list[str]) -> int:
    args = AgentArgs(**json.loads(argv[1]))
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
