"""The seam for a jail: ``LocalShell(wrapper=...)`` with ``unshare`` (util-linux).

A new network namespace (only a loopback, down) and a new PID namespace whose init is
the command's shell: when the group is killed, the kernel kills every process left in
the namespace, even one that left the process group with ``setsid``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from power_loop import ShellRequest
from tests.shell.support import call_bash, tagged_shell, wait_all_gone, wait_for_file

JAIL = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")


def jail_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    # Creating namespaces takes CAP_SYS_ADMIN (root, as here) or unprivileged user
    # namespaces; where neither is allowed, the seam is still shown by test_tool.py.
    return subprocess.run([*JAIL, "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not jail_works(),
                                reason="unshare cannot create namespaces here")


async def test_the_jailed_command_sees_no_network_and_no_other_process(
        tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path, wrapper=JAIL)
    result = await shell.run(ShellRequest(
        "echo pid=$$; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
        "ls /proc | grep -c '^[0-9]'"))
    # The shell is PID 1; /proc lists it and ls/grep only; the one interface is lo.
    assert (result.exit_code, result.stdout.data) == (0, b"pid=1\nlo\n3\n")


async def test_a_timeout_kills_even_what_left_the_group(tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path, wrapper=JAIL, timeout=1.0)
    outcome = await call_bash(shell, {"command": (
        "setsid sh -c 'echo $$ > escaped; exec sleep 30' & "
        "while [ ! -s escaped ]; do sleep 0.01; done; sleep 30")})
    await wait_for_file(tmp_path / "escaped")
    assert "timed out: the command ran past 1s" in outcome.result.content
    assert await wait_all_gone(tag) == []
