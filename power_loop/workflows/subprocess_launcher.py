"""``SubprocessLauncher``: each workflow leaf in an OS process of its own.

The leaf's process opens the store (``dsn``, ``table_prefix``), builds the application's
loop with ``app`` (``package.module:factory``, a callable taking the store and returning
the ``StatefulAgentLoop`` with the agents; the same factory ``power-loop worker --app``
takes), and runs the leaf's task in its child session, exactly as the in-process
launcher does. Its answer comes back on stdout. The child session is in the store, so a
leaf process that dies is re-attached to like any leaf in flight. Wrap the command
(``command=``) to put leaves in a container or a sandbox.

Run as ``python -m power_loop.workflows.subprocess_launcher '<json>'``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from power_loop.errors import WorkflowError

if TYPE_CHECKING:
    from power_loop.loop.agent import StatefulAgentLoop


class SubprocessLauncher:
    """A :class:`~power_loop.workflows.WorkerLauncher` running each leaf in a new process.

    Args:
        app: ``package.module:factory`` building the loop from an opened store.
        dsn: The store's DSN (the leaf's process opens its own connection).
        table_prefix: The store's table prefix.
        command: The command before the JSON argument (default: this Python,
            ``-m power_loop.workflows.subprocess_launcher``); prefix it with a sandbox.
    """

    def __init__(self, app: str, dsn: str, *, table_prefix: str = "pl_",
                 command: Sequence[str] | None = None) -> None:
        self.app, self.dsn, self.table_prefix = app, dsn, table_prefix
        self.command = list(command or [sys.executable, "-m",
                                        "power_loop.workflows.subprocess_launcher"])

    async def run_leaf(self, loop: StatefulAgentLoop, agent: str, child_id: str,
                       task: str) -> str:
        job = json.dumps({"app": self.app, "dsn": self.dsn, "prefix": self.table_prefix,
                          "agent": agent, "child_id": child_id, "task": task})
        process = await asyncio.create_subprocess_exec(
            *self.command, job, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await process.communicate()
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise WorkflowError(
                f"the leaf process for agent {agent!r} (child session {child_id!r}) exited "
                f"with {process.returncode}: {err.decode(errors='replace')[-500:]}",
                workflow_id=child_id)
        answer: str = json.loads(out.decode())["answer"]
        return answer


async def _run(job: dict[str, Any]) -> str:
    from power_loop.cli.worker import load_factory
    from power_loop.store.store import open_store
    from power_loop.workflows._service import InProcessLauncher

    async with await open_store(job["dsn"], table_prefix=job["prefix"]) as store:
        made = load_factory(job["app"])(store)
        loop: StatefulAgentLoop = await made if inspect.isawaitable(made) else made
        agent_loop = loop._agent_loop(job["agent"])
        if agent_loop is None:
            raise WorkflowError(f"the app's loop has no agent {job['agent']!r}",
                                workflow_id=job["child_id"])
        return await InProcessLauncher().run_leaf(agent_loop, job["agent"], job["child_id"],
                                                  job["task"])


def main(argv: list[str]) -> int:
    answer = asyncio.run(_run(json.loads(argv[1])))
    sys.stdout.write(json.dumps({"answer": answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
