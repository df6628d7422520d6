"""Hostile commands, output and configuration, generated: every case ends in a result or
a typed error, never a wedged call and never a process left running."""

from __future__ import annotations

import asyncio
import re
import shlex
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import InvalidArgumentError, LocalShell, ShellRequest, ShellResult
from power_loop.shell.rendering import show_bytes
from tests.shell.support import TAG_VAR, call_bash, tagged_shell, wait_all_gone

RUNS = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GUARD = 15.0  # seconds: far beyond any case's timeout, kill grace and drain
CAP = 1_000


# Any character (lone surrogates too), with NUL, quotes and shell syntax made likely.
TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(
    ["\0", "\ud800", "'", '"', "\\", "\n", "$(", "`", ";", "\x1b", "\x7f"])),
    max_size=40).map("".join)


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="power-loop-shell-"))


@settings(RUNS, max_examples=60)
@given(text=TEXT)
async def test_any_text_is_printed_back_or_refused(text: str) -> None:
    # The text is data (quoted), never code: NUL and lone surrogates cannot reach a shell.
    shell, tag = tagged_shell(_workdir())
    outcome = await call_bash(shell, {"command": f"printf %s {shlex.quote(text)}"})
    content = outcome.result.content
    try:
        data = text.encode()
    except UnicodeEncodeError:
        data = None
    if "\0" in text:
        event("NUL: refused")
        assert outcome.result.is_error and "NUL" in content
    elif data is None:
        event("lone surrogate: refused")
        assert outcome.result.is_error and "could not be started" in content
    else:
        event("printed back")
        assert not outcome.result.is_error
        shown = "stdout: (empty)" if not data else f"<stdout>\n{show_bytes(data)}"
        assert shown in content
    assert await wait_all_gone(tag) == []


@settings(RUNS, max_examples=40)
@given(data=st.one_of(st.binary(max_size=CAP), st.binary(min_size=CAP - 5, max_size=3 * CAP)),
       to_stderr=st.booleans())
async def test_binary_output_is_kept_exactly_within_the_cap(data: bytes,
                                                            to_stderr: bool) -> None:
    workdir = _workdir()
    (workdir / "blob").write_bytes(data)
    shell, _ = tagged_shell(workdir, max_output_bytes=CAP)
    result = await shell.run(ShellRequest("cat blob" + (" >&2" if to_stderr else "")))
    output, other = (result.stderr, result.stdout) if to_stderr else (result.stdout,
                                                                      result.stderr)
    event("cut" if len(data) > CAP else "whole")
    assert (result.exit_code, output.size, other.size) == (0, len(data), 0)
    if len(data) <= CAP:
        assert (output.data, output.cut) == (data, 0)
    else:
        assert (output.head, output.tail) == (data[:CAP // 2], data[-(CAP - CAP // 2):])
    text = show_bytes(output.data)
    text.encode("utf-8")  # valid Unicode, whatever the bytes
    assert "\0" not in text


@settings(RUNS, max_examples=12)
@given(size=st.integers(0, 4_000_000), newlines=st.booleans())
async def test_huge_output_is_counted_and_capped(size: int, newlines: bool) -> None:
    shell, tag = tagged_shell(_workdir(), max_output_bytes=CAP)
    fill = "tr '\\0' '\\n'" if newlines else "tr '\\0' x"
    result = await shell.run(ShellRequest(f"head -c {size} /dev/zero | {fill}"))
    assert (result.exit_code, result.stdout.size) == (0, size)
    assert len(result.stdout.data) == min(size, CAP)
    assert await wait_all_gone(tag) == []


BEHAVIOURS = {
    "sleeps": "sleep 30",
    "ignores SIGTERM, and so do its children":
        "trap '' TERM; sleep 30 & sleep 30 & sleep 30",
    "a fork tree (a bomb bounded by depth and the timeout)":
        "f() { if [ $1 -gt 0 ]; then f $(($1 - 1)) & f $(($1 - 1)) & fi; sleep 30; }; f 3",
    "keeps forking until killed": "while :; do sleep 30 & sleep 0.02; done",
    "floods both streams without a newline":
        "head -c 3000000 /dev/zero & head -c 3000000 /dev/zero >&2; sleep 30",
    "exits at once, children behind": "sleep 30 & sleep 30 & exit 5",
}
# Where the cancellation lands: a number of event-loop steps (the start, the readers,
# the first signals), seconds (while it runs, or during the kill grace), or never.
CANCEL_AT = st.one_of(st.none(), st.integers(0, 30), st.floats(0.0, 0.6))


@settings(RUNS, max_examples=30)
@given(behaviour=st.sampled_from(sorted(BEHAVIOURS)), cancel_at=CANCEL_AT)
async def test_no_command_wedges_a_call_or_outlives_it(behaviour: str,
                                                       cancel_at: int | float | None) -> None:
    shell, tag = tagged_shell(_workdir(), timeout=0.4, kill_grace=0.1)
    event(behaviour)
    task = asyncio.create_task(shell.run(ShellRequest(BEHAVIOURS[behaviour])))
    if isinstance(cancel_at, int):
        for _ in range(cancel_at):
            await asyncio.sleep(0)
        task.cancel()
    elif isinstance(cancel_at, float):
        await asyncio.wait({task}, timeout=cancel_at)
        task.cancel()
    async with asyncio.timeout(GUARD):
        await asyncio.wait({task})
    if task.cancelled():
        event("cancelled")
    else:
        result = task.result()
        assert isinstance(result, ShellResult)
        event("timed out" if result.timed_out else "ended")
        assert result.timed_out or result.exit_code == 5
    assert await wait_all_gone(tag) == []


_VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}\Z")
NAMES = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                  st.text(max_size=8),
                  st.sampled_from(["POWER_LOOP_X", "power_loop_attempt", "1A", "A=B", ""]))
VALUES = st.one_of(st.text(max_size=20), st.sampled_from(["a\0b", "\ud800", "=", "\n"]))


def _allowed(env: dict[str, str]) -> bool:
    for name, value in env.items():
        if not _VALID_NAME.match(name) or name.upper().startswith("POWER_LOOP_"):
            return False
        if "\0" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


@settings(RUNS, max_examples=60)
@given(env=st.dictionaries(NAMES.filter(lambda n: n != TAG_VAR), VALUES, max_size=4))
async def test_the_environment_is_exactly_what_was_allowed(env: dict[str, str]) -> None:
    workdir = _workdir()
    if not _allowed(env):
        event("refused")
        with pytest.raises(InvalidArgumentError):
            LocalShell(cwd=workdir, env=env, env_allow=())
        return
    event("accepted")
    shell = LocalShell(cwd=workdir, env=env, env_allow=(), timeout=5.0)
    result = await shell.run(ShellRequest("cat /proc/$$/environ; true",
                                          {"POWER_LOOP_ATTEMPT": "1"}))
    seen = dict(item.split(b"=", 1) for item in result.stdout.data.split(b"\0") if item)
    expected = {k.encode(): v.encode() for k, v in env.items()}
    assert seen == {**expected, b"POWER_LOOP_ATTEMPT": b"1"}
