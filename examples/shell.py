"""The opt-in bash tool: commands in a workspace, a timeout, a deduped deploy, a jail.

    python examples/shell.py

The model (scripted offline) runs commands through ``LocalShell``: each in a process
group of its own, killed whole at the timeout; only allowed variables are inherited; the
call's idempotency key is in ``$POWER_LOOP_IDEMPOTENCY_KEY``, so a script can refuse to
do the same thing twice. Then the same tool runs jailed by ``unshare`` (no network, its
own PIDs) when this machine allows it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from _common import data_dir

from power_loop import (
    AgentLoopConfig,
    LocalShell,
    ScriptedLLM,
    ShellRequest,
    StatefulAgentLoop,
    ToolContext,
    bash_tool,
    call_tool,
    reply,
)

# A deploy script that dedupes on the key: a second attempt of the same call is a no-op.
DEPLOY = ('grep -qx "$POWER_LOOP_IDEMPOTENCY_KEY" deployed.log 2>/dev/null '
          '&& echo "already deployed" '
          '|| { echo "$POWER_LOOP_IDEMPOTENCY_KEY" >> deployed.log; echo "deployed"; }')
JAIL = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")


def jail_works() -> bool:
    """Whether this machine lets ``unshare`` create namespaces (root, or user namespaces)."""
    return shutil.which("unshare") is not None and subprocess.run(
        [*JAIL, "true"], capture_output=True).returncode == 0


async def main() -> None:
    data = data_dir("shell")
    workspace = data / "workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("ship it\n")
    llm = ScriptedLLM([
        call_tool("bash", {"command": "ls; cat notes.txt; echo \"secret=${API_TOKEN-unset}\""},
                  text="Looking around."),
        call_tool("bash", {"command": "echo waiting; sleep 60 & sleep 60"}),
        call_tool("bash", {"command": DEPLOY}),
        reply("Deployed once; the long command was stopped at its timeout."),
        call_tool("bash", {"command": "echo pid=$$; tail -n +3 /proc/net/dev | cut -d: -f1"}),
        reply("Inside the jail I am PID 1 and see only the loopback interface."),
    ])
    shell = LocalShell(cwd=workspace, timeout=2.0, max_output_bytes=2_000,
                       env_allow=["PATH", "LANG"])  # API_TOKEN, say, stays out
    config = AgentLoopConfig(system_prompt="You operate a small server with bash.")
    async with StatefulAgentLoop(llm=llm, dsn=str(data / "app.db"),
                                 tools=[bash_tool(shell)], config=config) as loop:
        sid = await loop.new_session()
        result = await loop.send("Check the workspace, then deploy.", session_id=sid)
        for message in result.messages:
            for call in message.tool_calls:
                print(f"$ {call.parsed_arguments()['command']}")
            for answer in message.tool_results:
                print("  " + answer.content.replace("\n", "\n  "))
        print(f"model: {result.final_text}")

    # The same call attempted again (a retry, a resume of a tool declared safe to
    # repeat) carries the same key: the script sees it and does nothing.
    deploy = next(c for m in result.messages for c in m.tool_calls
                  if "deployed.log" in c.arguments)
    key = ToolContext.key_for(sid, result.send_index, deploy.id)
    again = await shell.run(ShellRequest(DEPLOY, {"POWER_LOOP_IDEMPOTENCY_KEY": key}))
    print(f"again with key {key}: {again.stdout.data.decode().strip()}")

    if jail_works():
        jailed = LocalShell(cwd=workspace, timeout=2.0, wrapper=JAIL)
        async with StatefulAgentLoop(llm=llm, dsn=str(data / "app.db"),
                                     tools=[bash_tool(jailed)], config=config) as loop:
            result = await loop.send("Where are you?", session_id=sid)
            print("jailed: " + result.messages[2].tool_results[0].content.replace(
                "\n", " | "))
            print(f"model: {result.final_text}")
    else:
        print("jailed: skipped (unshare cannot create namespaces on this machine)")


if __name__ == "__main__":
    asyncio.run(main())
