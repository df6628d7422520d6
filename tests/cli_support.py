"""Running ``power-loop`` as a real subprocess, and a store to run it against."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from power_loop import NewMessage, open_store

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Pw9"
"""A password that must never appear in anything the CLI prints."""
PROCESS_TIMEOUT = 120.0
"""Seconds one CLI run may take before the test kills it."""


@dataclass(frozen=True, slots=True)
class CliResult:
    """What one ``power-loop`` run did."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def interruptible() -> None:
    """``preexec_fn`` of a child the test stops with SIGINT: Ctrl-C's default action in
    it, whatever the test runner inherited. A shell without job control starts its
    background commands with SIGINT ignored, an ignored signal stays ignored across
    ``exec``, and Python then installs no ``KeyboardInterrupt`` handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment, without a stray POWER_LOOP_DSN, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "POWER_LOOP_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  stdin: bytes | None = None) -> CliResult:
    """Run ``python -m power_loop.cli.main ARGS`` and collect its output (UTF-8)."""
    return await run_python("-m", "power_loop.cli.main", *args, env=env, stdin=stdin)


async def run_python(*args: str, env: dict[str, str] | None = None,
                     stdin: bytes | None = None) -> CliResult:
    """Run this interpreter with ``args`` in a fresh process (killed after 120 s)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, env=env or cli_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            out, err = await process.communicate(stdin)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode("utf-8"), err.decode("utf-8"))


async def seed_sessions(dsn: str, prefix: str = "pl_") -> None:
    """Create ``alpha`` (two sends, one pending, text that stresses JSON Lines) and ``beta``."""
    store = await open_store(dsn, table_prefix=prefix)
    try:
        await store.create_session("alpha", system_prompt="Be terse.\nBe kind.",
                                   metadata={"user": "ana", "tags": ["x", "é"]})
        first = await store.start_send("alpha", [NewMessage(0, "user", {"text": "hi"})])
        await store.finish_send(
            "alpha", first.send_index,
            [NewMessage(0, "assistant", {"text": "line\u2028sep\u0085nel ☃ \x00 end"})],
            stop_reason="end_turn", rounds=1, usage={"input_tokens": 12, "output_tokens": 5})
        await store.start_send("alpha", [NewMessage(0, "user", {"text": "again"})])
        await store.create_session("beta", metadata={"n": 2})
    finally:
        await store.aclose()
