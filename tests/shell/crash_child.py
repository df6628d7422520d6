"""A process that runs one send whose ``bash`` call never ends, to be SIGKILLed.

``python -m tests.shell.crash_child DSN PREFIX SESSION_ID WORKDIR TAG [WRAPPER...]``:
the command starts background children (one leaves the group with ``setsid``), writes
``WORKDIR/ready`` and sleeps; the parent kills this process meanwhile.
"""

from __future__ import annotations

import asyncio
import sys

from power_loop import (
    AgentLoopConfig,
    LocalShell,
    ScriptedLLM,
    StatefulAgentLoop,
    bash_tool,
    call_tool,
)
from tests.shell.support import TAG_VAR

COMMAND = "sleep 300 & setsid sleep 300 & echo up > ready; sleep 300"
LEASE_TTL = 2.0


async def main(dsn: str, prefix: str, session_id: str, workdir: str, tag: str,
               wrapper: list[str]) -> None:
    shell = LocalShell(cwd=workdir, timeout=600, env={TAG_VAR: tag}, wrapper=wrapper)
    llm = ScriptedLLM([call_tool("bash", {"command": COMMAND}), "never reached"])
    async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=prefix,
                                 tools=[bash_tool(shell)],
                                 config=AgentLoopConfig(lease_ttl=LEASE_TTL)) as loop:
        await loop.send("Start the server", session_id=session_id)


if __name__ == "__main__":
    dsn, prefix, sid, workdir, tag, *wrapper = sys.argv[1:]
    asyncio.run(main(dsn, prefix, sid, workdir, tag, wrapper))
