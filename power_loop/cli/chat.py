"""``power-loop chat``: an interactive conversation on a session, streamed as it comes.

The model is the one the environment configures (``POWER_LOOP_PROVIDER``,
``POWER_LOOP_API_KEY``, ``POWER_LOOP_MODEL``, ``POWER_LOOP_BASE_URL``), or an offline
scripted one when no key is set. Ctrl-C stops the answer being written and leaves: what
came so far is stored, marked as cut off, and shown so when you come back. Kill the
process instead at any moment and start it again with ``--session ID``: the answer that
was cut off is finished first, then the conversation goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime

from power_loop.cli.registry import Command, set_handler
from power_loop.cli.store_access import add_store_arguments, store_target
from power_loop.errors import SessionNotFoundError
from power_loop.events.types import (
    Event,
    SendFinished,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
)
from power_loop.llm.env import create_llm_service_from_env
from power_loop.llm.scripted import ScriptedLLM, Turn, call_tool, reply
from power_loop.llm.service import LLMRequest, LLMService
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.config import AgentLoopConfig
from power_loop.store.migrations import SchemaPolicy
from power_loop.tools.tool import tool

_LEASE_TTL = 5.0
_HELP = "commands: /history  /session  /quit   (anything else is sent to the agent)"


@tool(safe_to_repeat=True)
def current_time() -> str:
    """The current date and time in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def offline_model(delay: float) -> ScriptedLLM:
    """A scripted stand-in for a model, for trying the REPL without an API key."""

    def answer(request: LLMRequest) -> Turn:
        last = request.messages[-1]
        if last.role == "tool":
            return reply(f"It is {last.tool_results[0].content} (UTC).", chunks=8,
                         chunk_delay=delay)
        said = last.text
        if "time" in said.lower():
            return call_tool("current_time", {})
        count = sum(1 for m in request.messages if m.role == "user")
        text = (f"(offline model) You said {said!r}. This is message {count} of this "
                "session; set POWER_LOOP_API_KEY to talk to a real model.")
        return reply(text, chunks=12, chunk_delay=delay)

    return ScriptedLLM(answer, model="offline")


def _model(args: argparse.Namespace) -> LLMService:
    if os.environ.get("POWER_LOOP_API_KEY"):
        return create_llm_service_from_env()
    return offline_model(args.offline_delay)


def _print_event(event: Event) -> None:
    if isinstance(event, TextChunk):
        print(event.text, end="", flush=True)
    elif isinstance(event, ToolCallStarted):
        print(f"\n  [tool] {event.name}({event.arguments})", flush=True)
    elif isinstance(event, ToolCallFinished):
        print(f"  [tool] -> {event.output[:200]}", flush=True)
    elif isinstance(event, SendFinished):
        print(flush=True)


_CUT_OFF = {"cancelled": "[cut off by Ctrl-C]", "stream_error": "[cut off: the model failed]"}


async def _history(loop: StatefulAgentLoop, session_id: str,
                   last: int | None = None) -> list[str]:
    """Print the session's messages (the last ``last``); return the cut-off marks shown."""
    items = await loop.history(session_id)
    marks: list[str] = []
    for item in items[-last:] if last else items:
        message = item.message
        text = message.text or ", ".join(
            [f"call {c.name}({c.arguments})" for c in message.tool_calls]
            + [f"result {r.content[:80]}" for r in message.tool_results])
        mark = _CUT_OFF.get(str(message.meta.get("partial")), "")
        if mark:
            marks.append(mark)
        print(f"  {item.seq:>4}  {message.role:<9} {text}{' ' + mark if mark else ''}")
    return marks


class _Lines:
    """Lines typed on stdin, read on the event loop itself.

    No thread: after Ctrl-C at the prompt, a thread blocked in ``input()`` would keep
    ``asyncio.run`` (or the interpreter's shutdown) waiting for a line that never comes.
    """

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno()
        self._encoding = sys.stdin.encoding or "utf-8"
        self._buffer = b""

    async def read(self, prompt: str) -> str:
        print(prompt, end="", flush=True)
        while b"\n" not in self._buffer:
            chunk = await self._chunk()
            if not chunk:
                if not self._buffer:
                    raise EOFError
                chunk = b"\n"  # a last line without its newline
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(self._encoding, errors="replace")

    async def _chunk(self) -> bytes:
        running = asyncio.get_running_loop()
        ready: asyncio.Future[None] = running.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            running.add_reader(self._fd, readable)
        except (OSError, ValueError):  # a regular file (`< script.txt`): never blocks
            return os.read(self._fd, 65536)
        try:
            await ready
        finally:
            running.remove_reader(self._fd)
        return os.read(self._fd, 65536)


async def _chat(args: argparse.Namespace) -> int:
    target = store_target(args)
    llm = _model(args)
    # A short lease: after a crash, the restarted chat waits at most this long.
    config = AgentLoopConfig(system_prompt=args.system, on_pending="resume",
                             lease_ttl=_LEASE_TTL)
    async with StatefulAgentLoop(llm=llm, dsn=target.dsn, table_prefix=target.prefix,
                                 schema=target.policy, tools=[current_time],
                                 config=config) as loop:
        session_id = args.session
        try:
            if session_id is None:
                raise SessionNotFoundError("new", session_id="")
            await loop.store.get_session(session_id)
            print(f"session {session_id} ({llm.model}); the latest messages:")
            if await _history(loop, session_id, last=6):
                print("  (an answer marked cut off stays as it was stored; ask again to "
                      "get a whole one)")
            session = await loop.store.get_session(session_id)
            if session.pending_send is not None:
                print(f"  an answer was cut off; finishing it (waiting up to {_LEASE_TTL:.0f}s "
                      "for the process that held the session to let go)")
            result = await loop.resume(session_id, on_event=_print_event)
            if result is not None:
                print(f"  (finished the answer that was cut off: send #{result.send_index})")
        except SessionNotFoundError:
            session_id = await loop.new_session(session_id=session_id)
            print(f"new session {session_id} ({llm.model})")
        print(_HELP)
        lines = _Lines()
        while True:
            try:
                line = await lines.read("you> ")
            except (EOFError, OSError, ValueError):
                print()
                return 0
            text = line.strip()
            if not text:
                continue
            if text in {"/quit", "/exit"}:
                return 0
            if text == "/history":
                await _history(loop, session_id)
                continue
            if text == "/session":
                print(f"  {session_id}")
                continue
            print("agent> ", end="", flush=True)
            try:
                async for event in loop.stream(text, session_id):
                    _print_event(event)
            except asyncio.CancelledError:  # Ctrl-C: the loop has stored the partial answer
                print(f" {_CUT_OFF['cancelled']}\n  (stored as cut off; start again with "
                      f"--session {session_id} to go on)", flush=True)
                raise


def _handle(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_chat(args))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _configure(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, policy=SchemaPolicy.AUTO_CREATE,
                        why="a chat on a new database starts its tables")
    parser.add_argument("--session", metavar="ID",
                        help="continue this session (created if it does not exist)")
    parser.add_argument("--system", metavar="TEXT", default="You are a helpful assistant.",
                        help="system prompt for a new session")
    parser.add_argument("--offline-delay", type=float, default=0.02, help=argparse.SUPPRESS)
    set_handler(parser, _handle)


COMMANDS = (
    Command("chat", "talk to an agent on a session (streams; survives restarts)", _configure,
            description=__doc__),
)
