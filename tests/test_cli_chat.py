"""``power-loop chat`` as a user drives it: streamed answers, a SIGKILL, a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from power_loop import open_store
from power_loop.cli.chat import offline_model
from tests.cli_support import interruptible

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


def _read_until(stream: IO[str], marker: str) -> str:
    seen = ""
    deadline = time.monotonic() + 30
    while marker not in seen and time.monotonic() < deadline:
        char = stream.read(1)
        if not char:
            break
        seen += char
    return seen


async def _stored(dsn: str) -> tuple[str, dict[str, Any], int | None]:
    store = await open_store(dsn)
    async with store:
        session = await store.get_session("s1")
        messages = await store.read_messages("s1")
        send = await store.get_send("s1", 0)
    return send.status, dict(messages[-1].body.get("meta", {})), session.pending_send


def test_ctrl_c_mid_answer_marks_it_cut_off_and_the_restart_shows_it(tmp_path: Path) -> None:
    dsn = str(tmp_path / "chat.db")
    with subprocess.Popen([*CHAT, "--dsn", dsn, "--session", "s1", "--offline-delay", "0.5"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_env(), preexec_fn=interruptible) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write("tell me something\n")
        proc.stdin.flush()
        seen = _read_until(proc.stdout, "You said")  # the answer has begun streaming
        assert "You said" in seen
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        seen += proc.stdout.read()
        assert "interrupted" in proc.stderr.read()
    assert "[cut off by Ctrl-C]" in seen and "stored as cut off" in seen
    status, meta, pending = asyncio.run(_stored(dsn))
    assert (status, meta.get("partial"), pending) == ("cancelled", "cancelled", None)

    done = subprocess.run([*CHAT, "--dsn", dsn, "--session", "s1", "--offline-delay", "0"],
                          input="/history\nand now?\n/quit\n", capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "   1  assistant (offline model) You said 'tell" in done.stdout
    assert "[cut off by Ctrl-C]\n  (an answer marked cut off stays" in done.stdout
    assert "You said 'and now?'. This is message 2" in done.stdout  # the session goes on


def test_ctrl_c_at_the_prompt_leaves_at_once(tmp_path: Path) -> None:
    dsn = str(tmp_path / "chat.db")
    with subprocess.Popen([*CHAT, "--dsn", dsn, "--session", "s1", "--offline-delay", "0"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_env(), preexec_fn=interruptible) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert "you> " in _read_until(proc.stdout, "you> ")
        os.kill(proc.pid, signal.SIGINT)  # stdin stays open: nothing else ends the chat
        assert proc.wait(timeout=30) == 130
        assert proc.stderr.read().strip() == "interrupted"
