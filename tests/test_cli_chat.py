"""``power-loop chat`` as a user drives it: streamed answers, a SIGKILL, a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from power_loop.cli.chat import offline_model

CHAT = [sys.executable, "-m", "power_loop.cli.main", "chat"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "POWER_LOOP_API_KEY"}


def test_a_conversation_streams_and_lists_its_history(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CHAT, "--dsn", str(tmp_path / "chat.db"), "--session", "s1", "--offline-delay", "0"],
        input="hello\nwhat time is it?\n/history\n/quit\n", capture_output=True, text=True,
        env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "new session s1" in out
    assert "You said 'hello'" in out
    assert "[tool] current_time({})" in out
    assert "   5  assistant It is " in out  # /history: user, answer, user, call, result, answer


def test_a_chat_killed_mid_answer_resumes_on_restart(tmp_path: Path) -> None:
    dsn = str(tmp_path / "chat.db")
    with subprocess.Popen([*CHAT, "--dsn", dsn, "--session", "s1", "--offline-delay", "0.5"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=_env()) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("tell me something\n")
        proc.stdin.flush()
        seen = ""
        deadline = time.monotonic() + 30
        while "You said" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read(1)  # the answer has begun streaming
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert "You said" in seen

    done = subprocess.run([*CHAT, "--dsn", dsn, "--session", "s1", "--offline-delay", "0"],
                          input="/history\n/quit\n", capture_output=True, text=True, env=_env(),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "finished the answer that was cut off: send #0" in done.stdout
    assert "   1  assistant (offline model) You said 'tell me something'" in done.stdout


def test_the_offline_model_answers_from_the_conversation() -> None:
    assert offline_model(0.0).model == "offline"
