"""``power-loop chat``: an interactive conversation on a session, streamed as it comes.

The model is the one the environment configures (``POWER_LOOP_PROVIDER``,
``POWER_LOOP_API_KEY``, ``POWER_LOOP_MODEL``, ``POWER_LOOP_BASE_URL``), or an offline
scripted one when no key is set. Kill the process at any moment and start it again with
``--session ID``: an answer that was cut off is finished first, then the conversation
goes on.
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


async def _history(loop: StatefulAgentLoop, session_id: str, last: int | None = None) -> None:
    items = await loop.history(session_id)
    for item in items[-last:] if last else items:
        message = item.message
        text = message.text or ", ".join(
            [f"call {c.name}({c.arguments})" for c in message.tool_calls]
            + [f"result {r.content[:80]}" for r in message.tool_results])
        print(f"  {item.seq:>4}  {message.role:<9} {text}")


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
            await _history(loop, session_id, last=6)
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
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
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
            async for event in loop.stream(text, session_id):
                _print_event(event)


def _handle(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_chat(args))
    except KeyboardInterrupt:
        print(file=sys.stderr)
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
