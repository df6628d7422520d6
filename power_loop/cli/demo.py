"""``power-loop demo``: a conversation that survives a crash, told as it happens.

Three OS processes share one SQLite file and nothing else. Process A asks the agent a
question; the agent checks the weather and starts booking a table, and A is killed with
SIGKILL while the booking waits for its confirmation. Process B, given only the file and
the session id, resumes the send: the booking tool is not safe to repeat, so instead of
booking twice the model is told the outcome is unknown and checks first. Process C
carries the conversation on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from power_loop import errors
from power_loop.cli.demo_agent import demo_model, real_model_configured
from power_loop.cli.registry import Command, set_handler
from power_loop.errors import PowerLoopError
from power_loop.store.store import open_store

_WIDTH = 78


def _say(text: str = "") -> None:
    print(text, flush=True)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _rule(title: str) -> None:
    _say()
    _say(f"── {title} " + "─" * max(0, _WIDTH - len(title) - 4))


def _child(step: str, dsn: str, session_id: str, workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "power_loop.cli.demo_agent", step, dsn, session_id,
         str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")


def _child_error(event: dict[str, Any]) -> PowerLoopError:
    """The typed error a child process reported, rebuilt to be raised here."""
    found = getattr(errors, str(event.get("error")), None)
    kind = found if isinstance(found, type) and issubclass(found, PowerLoopError) else (
        PowerLoopError)
    # Subclasses' constructors differ; the message, the details and the class (hence
    # the code) are what the command line reports.
    error = kind.__new__(kind)
    PowerLoopError.__init__(error, event["message"], **event.get("details", {}))
    for name, value in error.details.items():
        setattr(error, name, value)
    return error


def _events(proc: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip():
            event = json.loads(line)
            if event["type"] == "Error":
                proc.wait()
                raise _child_error(event)
            yield event


class _Renderer:
    """Turns a child's events into lines a person enjoys reading."""

    def __init__(self, who: str) -> None:
        self.who = who
        self._streaming = False

    def _end_stream(self) -> None:
        if self._streaming:
            print(flush=True)
            self._streaming = False

    def show(self, event: dict[str, Any]) -> None:
        kind, prefix = event["type"], f"  {self.who} │ "
        if kind == "TextChunk":
            if not self._streaming:
                print(f"{prefix}🤖 ", end="", flush=True)
                self._streaming = True
            print(event["text"], end="", flush=True)
            return
        self._end_stream()
        if kind == "SendStarted":
            how = "resuming the interrupted send" if event.get("resumed") else "new send"
            _say(f"{prefix}▶ send #{event['send']} ({how})")
        elif kind == "ToolCallStarted":
            again = " (again: it is safe to repeat)" if event.get("attempt", 1) > 1 else ""
            _say(f"{prefix}🔧 {event['name']}({event['arguments']}){again}")
        elif kind == "ToolCallFinished" and event.get("synthetic"):
            _say(f"{prefix}⚠ {event['name']} was cut off by the crash and is not safe to "
                 "repeat:")
            _say(f"{prefix}   not re-run; the model is told its outcome is unknown")
        elif kind == "ToolCallFinished":
            mark = "✗" if event["is_error"] else "✓"
            _say(f"{prefix}   {mark} {_clip(event['output'], _WIDTH - 12)}")
        elif kind == "SendFinished":
            _say(f"{prefix}✔ send #{event['send']} finished")

    def close(self) -> None:
        self._end_stream()


async def _pending_state(dsn: str, session_id: str) -> tuple[int | None, int, list[str]]:
    store = await open_store(dsn)
    try:
        session = await store.get_session(session_id)
        messages = await store.read_messages(session_id)
    finally:
        await store.aclose()
    calls = {p["id"]: p["name"] for m in messages for p in m.body["parts"]
             if p["kind"] == "tool_call"}
    answered = {p["call_id"] for m in messages for p in m.body["parts"]
                if p["kind"] == "tool_result"}
    return session.pending_send, len(messages), [calls[c] for c in calls if c not in answered]


def _step_ask(dsn: str, session_id: str, workdir: Path) -> int:
    _rule("Process A: asks, and is killed mid-tool")
    proc = _child("ask", dsn, session_id, workdir)
    _say(f"  A │ pid {proc.pid}: a new session, then the question:")
    renderer = _Renderer("A")
    for event in _events(proc):
        renderer.show(event)
        if event["type"] == "ToolCallStarted" and event["name"] == "book_table":
            deadline = time.monotonic() + 30
            while not (workdir / "restaurant-bookings.json").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the booking tool never wrote its booking")
                time.sleep(0.02)
            time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
            renderer.close()
            _say("  A │ 💥 SIGKILL: the table is booked, but A dies before the result is "
                 "stored")
            break
    proc.wait()
    if proc.returncode == 0:
        renderer.close()
        _say("  A │ the model finished without booking, so there was nothing to interrupt")
    return proc.returncode


def _step(step: str, who: str, title: str, dsn: str, session_id: str,
          workdir: Path) -> dict[str, Any]:
    _rule(title)
    proc = _child(step, dsn, session_id, workdir)
    _say(f"  {who} │ pid {proc.pid}, knowing only the file and the session id")
    renderer = _Renderer(who)
    history: dict[str, Any] = {}
    for event in _events(proc):
        if event["type"] == "History":
            history = event
        elif event["type"] not in {"Exit", "Resumed"}:
            renderer.show(event)
    renderer.close()
    if proc.wait() != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"demo step {step!r} failed:\n{proc.stderr.read()}")
    return history


def run_demo(workdir: Path) -> int:
    """Run the three processes and narrate; returns the exit status."""
    dsn = str(workdir / "demo.db")
    session_id = f"demo-{uuid.uuid4().hex[:8]}"
    _say("power_loop demo: a conversation that survives a crash")
    if real_model_configured():
        model = demo_model()
        _say(f"  model:   {model.model} via {type(model).__name__} (POWER_LOOP_API_KEY is set)")
    else:
        _say("  model:   ScriptedLLM, offline and deterministic (set POWER_LOOP_API_KEY and "
             "POWER_LOOP_PROVIDER/MODEL for a real one)")
    _say(f"  store:   {dsn}")
    _say(f"  session: {session_id}")

    code = _step_ask(dsn, session_id, workdir)
    pending, stored, orphans = asyncio.run(_pending_state(dsn, session_id))
    _rule("What the store holds after the crash")
    status = f"killed by signal {-code}" if code < 0 else "it exited by itself"
    _say(f"  process A exit status {code} ({status})")
    state = "no send is pending" if pending is None else f"send #{pending} is pending"
    _say(f"  {stored} messages stored; {state}; tool calls without a result: "
         f"{', '.join(orphans) or 'none'}")

    _step("resume", "B", "Process B: resumes the pending send", dsn, session_id, workdir)
    history = _step("continue", "C", "Process C: carries the conversation on", dsn,
                    session_id, workdir)

    _rule("The whole conversation, as stored")
    for message in history.get("messages", []):
        text = message["text"] or ", ".join(f"call {c}" for c in message["calls"])
        if message["results"]:
            text = message["results"][0]
        note = f"  [{message['synthetic']}]" if message["synthetic"] else ""
        _say(f"  {message['seq']:>2} · send {message['send']} · {message['role']:<9} "
             f"{_clip(text, 48)}{note}")
    bookings_file = workdir / "restaurant-bookings.json"
    bookings = json.loads(bookings_file.read_text()) if bookings_file.exists() else []
    _rule("Outcome")
    kills = "1 SIGKILL" if code < 0 else "no crash"
    _say(f"  3 processes, {kills}, {len(history.get('messages', []))} messages, "
         f"{len(bookings)} booking{'s' if len(bookings) != 1 else ''} (never booked twice)")
    _say(f"  inspect it: power-loop sessions show --dsn {dsn} {session_id}")
    return 0 if len(bookings) <= 1 else 1


def _handle(args: argparse.Namespace) -> int:
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="power-loop-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return run_demo(workdir.resolve())


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", metavar="DIR",
                        help="where to keep the demo's SQLite file (default: a new temp dir)")
    set_handler(parser, _handle)


COMMANDS = (
    Command("demo", "run the crash-and-resume demo (offline, on a SQLite file)", _configure,
            description=__doc__),
)
