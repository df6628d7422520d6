"""The application the worker tests run: ``power-loop worker --app tests.workers.app:make_loop``.

One loop factory, shaped by environment variables so that each worker process of a test
can behave a little differently (a slow tool in one of them only):

``PLW_LEASE_TTL``
    The loop's ``lease_ttl`` (default 2 s).
``PLW_MODEL_DELAY``
    Seconds every model answer takes (default 0).
``PLW_TOOL_SLEEP``
    Seconds the ``work`` tool takes (default 0).
``PLW_SLOW_SLEEP``
    If set, a message holding :data:`SLOW` makes the tool (or, with :data:`SLOW_MODEL`,
    the model) take this long; without it the same message is quick. So a frozen worker
    can be slow while the worker that takes its send over is not.
``PLW_RECORD``
    A JSON Lines file: the worker's start (with its wall clock, ``time.time()``), every
    event it emits and every tool start and effect are appended to it, one ``write`` per
    line, with the pid.
``PLW_ON_PENDING``
    The loop's ``on_pending`` (default ``raise``).

The model depends only on the conversation (see :func:`script`), so a process that
takes a send over answers exactly as the one that started it would have.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from datetime import datetime
from typing import Any

from power_loop import (
    AgentLoopConfig,
    Event,
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    ToolContext,
    Turn,
    call_tool,
    reply,
    tool,
)

TOOL = "[tool]"
"""A message holding this makes the model call the ``work`` tool before it answers."""
SLOW = "[slow]"
"""A message holding this calls the tool, slowly in a process with ``PLW_SLOW_SLEEP``."""
SLOW_MODEL = "[slow-model]"
"""A message holding this makes the model slow in a process with ``PLW_SLOW_SLEEP``."""
ACK = "ack: "
DONE = "done: "


def record(line: dict[str, Any]) -> None:
    """Append one line to ``$PLW_RECORD`` with a single ``write`` (O_APPEND), stamped
    with the pid and ``t`` (``time.monotonic()``, one clock for every process here)."""
    path = os.environ.get("PLW_RECORD")
    if not path:
        return
    stamped = {"pid": os.getpid(), "t": round(time.monotonic(), 4), **line}
    data = json.dumps(stamped, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def on_event(event: Event) -> None:
    """Record the events that tell what a worker did (not text chunks and rounds)."""
    if event.type in {"TextChunk", "RoundStarted", "RoundFinished", "UsageUpdated",
                      "ToolCallStarted", "ToolCallFinished"}:
        return
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
              if f.name not in {"result", "seq", "at"}}
    for key, value in fields.items():
        if isinstance(value, datetime):
            fields[key] = value.isoformat()
    if "kind" in fields:  # worker events say what was claimed; keep the line's own kind
        fields["what"] = fields.pop("kind")
    record({"kind": "event", "type": event.type, **fields})


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def script(request: LLMRequest) -> Turn:
    """After a tool result: say done with it. After a user message: call the tool if the
    message asks for it, else acknowledge it."""
    delay = _float("PLW_MODEL_DELAY", 0.0)
    slow = os.environ.get("PLW_SLOW_SLEEP")
    last = request.messages[-1]
    if last.role == "tool":
        return reply(DONE + last.tool_results[0].content, delay=delay)
    text = last.text
    if SLOW_MODEL in text and slow:
        record({"kind": "model", "slow": True})
        return reply(ACK + text, delay=float(slow))
    if TOOL in text or SLOW in text:
        return call_tool("work", {"tag": text}, delay=delay)
    return reply(ACK + text, delay=delay)


@tool
async def work(tag: str, ctx: ToolContext) -> str:
    """Do some work that must not happen twice.

    Args:
        tag: What the work is about.
    """
    facts = {"session_id": ctx.session_id, "send_index": ctx.send_index,
             "call_id": ctx.call_id, "attempt": ctx.attempt, "tag": tag}
    record({"kind": "tool", "event": "start", **facts})
    slow = os.environ.get("PLW_SLOW_SLEEP")
    pause = float(slow) if slow and SLOW in tag else _float("PLW_TOOL_SLEEP", 0.0)
    if pause:
        await asyncio.sleep(pause)
    record({"kind": "tool", "event": "effect", **facts})
    return f"worked on {tag}"


def make_loop(store: Store) -> StatefulAgentLoop:
    """The factory ``power-loop worker --app`` calls with the opened store."""
    record({"kind": "start", "wall": time.time()})
    config = AgentLoopConfig(
        lease_ttl=_float("PLW_LEASE_TTL", 2.0),
        on_pending=os.environ.get("PLW_ON_PENDING", "raise"),  # type: ignore[arg-type]
        on_event=on_event if os.environ.get("PLW_RECORD") else None)
    return StatefulAgentLoop(llm=ScriptedLLM(script), store=store, config=config,
                             tools=[work])
