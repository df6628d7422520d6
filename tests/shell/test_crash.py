"""The agent process SIGKILLed during a ``bash`` call, then the send resumed.

The plain ``LocalShell`` cannot outlive-proof its commands: a SIGKILL of the process
that runs power_loop leaves the command running (nobody is left to kill its group).
``setpriv --pdeathsig KILL`` before an ``unshare`` PID namespace closes that: the jail
dies with its parent and the kernel ends everything in it. Either way the resumed send
does not run the command again and tells the model its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

from conformance.waiting import eventually
from power_loop import ScriptedLLM, SessionBusyError, Store, bash_tool
from tests.loop.support import make_loop, trailing_results
from tests.shell.support import running_with, tagged_shell, wait_all_gone, wait_for_file
from tests.shell.test_jail import JAIL, jail_works

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DEATH_JAIL = ("setpriv", "--pdeathsig", "KILL", *JAIL)


async def _kill_during_the_command(dsn: str, prefix: str, sid: str, workdir: Path,
                                   wrapper: tuple[str, ...]) -> str:
    """Run the child's send until its command is up, SIGKILL the child; the tag."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.shell.crash_child", dsn, prefix, sid, str(workdir), tag,
        *wrapper, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL)
    try:
        await wait_for_file(workdir / "ready", within=60.0)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    (workdir / "ready").unlink()
    return tag


async def _resume_without_rerunning(store: Store, sid: str, workdir: Path) -> None:
    shell, _ = tagged_shell(workdir)
    llm = ScriptedLLM(["I cannot tell whether the server started."])
    loop = make_loop(store, llm, [bash_tool(shell)])

    async def resumed() -> bool:
        try:
            result = await loop.resume(sid)
        except SessionBusyError:
            return False  # the killed holder's lease has not lapsed yet
        assert result is not None and result.status == "done"
        return True

    await eventually(resumed, "the killed process's lease to lapse")
    [told] = trailing_results(llm.requests[0])
    assert told.is_error and "unknown" in told.content
    assert not (workdir / "ready").exists()  # the command did not run again


async def test_a_jail_dies_with_a_killed_agent(store: Store, dsn: str, table_prefix: str,
                                               tmp_path: Path) -> None:
    if not jail_works() or shutil.which("setpriv") is None:
        pytest.skip("unshare cannot create namespaces here, or setpriv is missing")
    sid = await make_loop(store, ScriptedLLM([])).new_session()
    tag = await _kill_during_the_command(dsn, table_prefix, sid, tmp_path, DEATH_JAIL)
    assert await wait_all_gone(tag) == []
    await _resume_without_rerunning(store, sid, tmp_path)


@pytest.mark.backends("sqlite")
async def test_a_plain_command_outlives_a_killed_agent(store: Store, dsn: str,
                                                       table_prefix: str,
                                                       tmp_path: Path) -> None:
    sid = await make_loop(store, ScriptedLLM([])).new_session()
    tag = await _kill_during_the_command(dsn, table_prefix, sid, tmp_path, ())
    left = running_with(tag)
    try:
        assert len(left) >= 3  # the shell and its children: the documented limit
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert await wait_all_gone(tag) == []
    await _resume_without_rerunning(store, sid, tmp_path)
