"""LocalShell: process groups killed whole, cancellation, output caps, the environment."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from power_loop import InvalidArgumentError, LocalShell, ShellRequest, ToolError
from power_loop.shell import DEFAULT_ENV_ALLOW
from tests.shell.support import (
    TAG_VAR,
    tagged_shell,
    wait_all_gone,
    wait_for_file,
    wait_running,
)

# Background grandchildren, one of them deaf to SIGTERM, then the leader waits: its pids
# are written to a file so the test knows they ran.
SPAWN = ("sleep 30 & echo $! >> pids; (trap '' TERM; sleep 30) & echo $! >> pids; "
         "sh -c 'sleep 30' & echo $! >> pids; echo started >> pids; ")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


async def test_a_command_runs_and_reports(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path)
    result = await shell.run(ShellRequest("echo out; echo err >&2; pwd; exit 3"))
    assert (result.exit_code, result.timed_out, result.notes) == (3, False, ())
    assert result.stdout.data == f"out\n{tmp_path}\n".encode()
    assert result.stderr.data == b"err\n"
    assert result.stdout.cut == 0


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path, timeout=1.0)
    result = await shell.run(ShellRequest(SPAWN + "trap '' TERM; sleep 30"))
    written = (tmp_path / "pids").read_text().split()
    assert written[3:] == ["started"]
    pids = [int(p) for p in written[:3]]
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL  # the leader ignored SIGTERM too
    assert await wait_all_gone(tag) == []
    assert not any(_alive(p) for p in pids)


async def test_a_command_that_obeys_sigterm_ends_by_it(tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path, timeout=0.3, kill_grace=5.0)
    result = await shell.run(ShellRequest("exec sleep 30"))
    assert (result.timed_out, result.exit_code) == (True, -signal.SIGTERM)
    assert await wait_all_gone(tag) == []


async def test_background_children_die_when_the_command_ends(tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path)
    result = await shell.run(ShellRequest(SPAWN + "exit 0"))
    assert (result.exit_code, result.timed_out) == (0, False)
    assert (tmp_path / "pids").read_text().endswith("started\n")
    assert await wait_all_gone(tag) == []


async def test_output_held_open_by_an_escaped_process_is_given_up(tmp_path: Path) -> None:
    # setsid leaves the group: the local backend cannot kill it, but the call still ends.
    shell, tag = tagged_shell(tmp_path)
    result = await shell.run(ShellRequest(
        "setsid sh -c 'echo $$ > escaped; exec sleep 5' & "
        "while [ ! -s escaped ]; do sleep 0.01; done; echo hi"))
    try:
        assert result.stdout.data == b"hi\n"
        assert result.exit_code == 0
        assert [n for n in result.notes if "kept the pipe open" in n]
    finally:
        os.kill(int((tmp_path / "escaped").read_text()), signal.SIGKILL)
    assert await wait_all_gone(tag) == []


async def test_cancellation_kills_the_whole_process_group(tmp_path: Path) -> None:
    shell, tag = tagged_shell(tmp_path, timeout=30.0)
    task = asyncio.create_task(shell.run(ShellRequest(SPAWN + "sleep 30")))
    await wait_for_file(tmp_path / "pids")
    await wait_running(tag, 5)  # the shell, three children, one grandchild
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_all_gone(tag) == []


async def test_output_is_capped_keeping_its_start_and_end(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path, max_output_bytes=1_000)
    result = await shell.run(ShellRequest(
        "printf START; head -c 3000000 /dev/zero | tr '\\0' x; printf END; "
        "head -c 5000 /dev/zero >&2"))
    out, err = result.stdout, result.stderr
    assert out.size == 3_000_008 and len(out.data) == 1_000
    assert out.head.startswith(b"START") and out.tail.endswith(b"xEND")
    assert out.cut == 3_000_008 - 1_000
    assert (err.size, len(err.data)) == (5_000, 1_000)


async def test_stdin_is_closed(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path, timeout=5.0)
    result = await shell.run(ShellRequest("cat; echo status=$?"))
    assert (result.timed_out, result.stdout.data) == (False, b"status=0\n")


async def test_only_allowed_variables_are_inherited(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("ALLOWED_ONE", "yes")
    shell, tag = tagged_shell(tmp_path, env_allow=["PATH", "ALLOWED_ONE", "NOT_SET_HERE"],
                              env={"EXTRA": "x=y z"})
    # "; true": bash stays (no exec of cat), so $$ is the shell the backend started.
    result = await shell.run(ShellRequest("cat /proc/$$/environ; true",
                                          {"POWER_LOOP_IDEMPOTENCY_KEY": "s:0:c"}))
    seen = dict(item.split(b"=", 1) for item in result.stdout.data.split(b"\0") if item)
    assert seen == {b"PATH": os.environb[b"PATH"], b"ALLOWED_ONE": b"yes",
                    b"EXTRA": b"x=y z", TAG_VAR.encode(): tag.encode(),
                    b"POWER_LOOP_IDEMPOTENCY_KEY": b"s:0:c"}
    assert "PATH" in DEFAULT_ENV_ALLOW and "SECRET_TOKEN" not in shell.environment()


@pytest.mark.parametrize("cwd, shell_path", [("missing-dir", "/bin/bash"),
                                             (".", "/no/such/shell"),
                                             (".", "/etc/hostname")])
async def test_a_command_that_cannot_start_is_a_tool_error(tmp_path: Path, cwd: str,
                                                           shell_path: str) -> None:
    shell = LocalShell(cwd=tmp_path / cwd, shell=shell_path, timeout=5.0)
    with pytest.raises(ToolError, match="could not be started"):
        await shell.run(ShellRequest("echo never"))


async def test_a_nul_in_the_command_is_a_tool_error(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path)
    with pytest.raises(ToolError, match="NUL"):
        await shell.run(ShellRequest("echo a\0b"))


@pytest.mark.parametrize("options", [
    {"timeout": 0}, {"timeout": float("nan")}, {"timeout": True}, {"kill_grace": -1},
    {"max_output_bytes": 10}, {"max_output_bytes": 2.5}, {"env_allow": "PATH"},
    {"env_allow": ["1BAD"]}, {"env_allow": ["POWER_LOOP_IDEMPOTENCY_KEY"]},
    {"env": {"A-B": "x"}}, {"env": {"A": "x\0y"}}, {"env": {"A": 1}},
    {"env": {"power_loop_attempt": "9"}}, {"env": {"A": "\ud800"}}, {"shell": ""},
    {"wrapper": ["unshare", ""]},
])
def test_bad_configuration_is_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        LocalShell(cwd=tmp_path, **options)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_argument"
