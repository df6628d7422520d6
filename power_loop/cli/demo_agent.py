"""The demo's agent: its tools, its scripted model, and the child process entry point.

Each step of ``power-loop demo`` runs in its own OS process (``python -m
power_loop.cli.demo_agent STEP DSN SESSION WORKDIR``), printing the loop's events as
JSON lines for the parent to render. The model is a :class:`ScriptedLLM` driven by a
function of the conversation, so whichever process calls it, it answers the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from power_loop.errors import PowerLoopError
from power_loop.events.types import Event
from power_loop.llm.env import create_llm_service_from_env
from power_loop.llm.messages import Message
from power_loop.llm.scripted import ScriptedLLM, Turn, call_tool, reply
from power_loop.llm.service import LLMRequest, LLMService
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.config import AgentLoopConfig
from power_loop.tools.context import ToolContext
from power_loop.tools.registry import ToolRegistry
from power_loop.tools.tool import tool

SYSTEM_PROMPT = "You are a concise travel assistant. Use the tools; never book twice."
FIRST_QUESTION = "What's the weather in Lyon tonight? If it's dry, book me a table for two."
FOLLOW_UP = "Thanks! Remind me: what did I ask you first?"


def _bookings(workdir: Path) -> Path:
    return workdir / "restaurant-bookings.json"


def make_tools(workdir: Path, *, slow_confirmation: float) -> ToolRegistry:
    """The demo's tools; bookings land in a JSON file standing in for a restaurant's API."""

    @tool(safe_to_repeat=True)
    def get_weather(city: str) -> str:
        """Tonight's weather for a city.

        Args:
            city: The city, e.g. "Lyon".
        """
        return f"{city}: 19°C, clear sky, no rain expected"

    @tool
    async def book_table(restaurant: str, guests: int, context: ToolContext) -> str:
        """Book a table (not safe to repeat: a second call books a second table).

        Args:
            restaurant: Restaurant name.
            guests: Number of guests.
        """
        path = _bookings(workdir)
        bookings = json.loads(path.read_text()) if path.exists() else []
        bookings.append({"restaurant": restaurant, "guests": guests, "ref": "LY-4821",
                         "idempotency_key": context.idempotency_key})
        path.write_text(json.dumps(bookings))
        await asyncio.sleep(slow_confirmation)  # waiting for the confirmation e-mail...
        return "Booked: ref LY-4821"

    @tool(safe_to_repeat=True)
    def find_booking(restaurant: str) -> str:
        """Look up existing bookings at a restaurant.

        Args:
            restaurant: Restaurant name.
        """
        path = _bookings(workdir)
        bookings = json.loads(path.read_text()) if path.exists() else []
        found = [b for b in bookings if b["restaurant"] == restaurant]
        return json.dumps(found) if found else "no booking found"

    return ToolRegistry([get_weather, book_table, find_booking])


def script(request: LLMRequest) -> Turn:
    """The model: a pure function of the conversation it is shown."""
    messages = request.messages
    last = messages[-1]
    if last.role == "user" and last.text == FOLLOW_UP:
        first = next(m.text for m in messages if m.role == "user")
        return reply(f'You first asked: "{first}" It was dry, so I booked Le Bouchon for two.')
    if last.role == "user":
        return call_tool("get_weather", {"city": "Lyon"},
                         text="Let me check the weather first.")
    result = last.tool_results[0]
    if result.name == "get_weather":
        return call_tool("book_table", {"restaurant": "Le Bouchon", "guests": 2},
                         text="Clear and dry. Booking a table for two.")
    if result.name == "book_table" and "unknown" in result.content:
        return call_tool("find_booking", {"restaurant": "Le Bouchon"},
                         text="The booking's outcome was lost in a crash; checking instead "
                              "of booking again.")
    if result.name == "find_booking" and "LY-4821" in result.content:
        return reply("Done: it is dry tonight (19°C) and your table for two at Le Bouchon "
                     "is confirmed, ref LY-4821.")
    return reply("Your table for two at Le Bouchon is booked, ref LY-4821.")


def real_model_configured() -> bool:
    """Whether the environment names a real model (``POWER_LOOP_API_KEY`` is set)."""
    return bool(os.environ.get("POWER_LOOP_API_KEY"))


def demo_model() -> LLMService:
    """The real model from the environment when configured, else the scripted one."""
    if real_model_configured():
        return create_llm_service_from_env()
    return ScriptedLLM(script, chunk_size=6)


def _event_line(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = {"type": event.type, "send": event.send_index}
    for name in ("text", "name", "arguments", "output", "is_error", "round", "attempt",
                 "stop_reason", "resumed", "synthetic"):
        if hasattr(event, name):
            data[name] = getattr(event, name)
    if event.type == "SendFinished":
        data["final_text"] = event.result.final_text  # type: ignore[attr-defined]
    return data


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


async def run_step(step: str, dsn: str, session_id: str, workdir: Path) -> None:
    """One demo step in this process."""
    loop = StatefulAgentLoop(
        llm=demo_model(), dsn=dsn,
        tools=make_tools(workdir, slow_confirmation=30.0 if step == "ask" else 0.0),
        config=AgentLoopConfig(system_prompt=SYSTEM_PROMPT, lease_ttl=2.0))
    async with loop:
        if step == "ask":
            await loop.new_session(session_id=session_id)
            async for event in loop.stream(FIRST_QUESTION, session_id):
                _emit(_event_line(event))
        elif step == "resume":
            result = await loop.resume(session_id,
                                       on_event=lambda event: _emit(_event_line(event)))
            _emit({"type": "Resumed", "final_text": result.final_text if result else None,
                   "rounds": result.rounds if result else 0})
        else:
            async for event in loop.stream(FOLLOW_UP, session_id):
                _emit(_event_line(event))
        history = await loop.history(session_id)
        _emit({"type": "History", "messages": [_history_line(h.seq, h.send_index, h.message)
                                               for h in history]})


def _history_line(seq: int, send_index: int, message: Message) -> dict[str, Any]:
    return {"seq": seq, "send": send_index, "role": message.role, "text": message.text,
            "calls": [c.name for c in message.tool_calls],
            "results": [r.content for r in message.tool_results],
            "synthetic": message.meta.get("synthetic")}


def main(argv: list[str]) -> None:
    step, dsn, session_id, workdir = argv
    started = time.monotonic()
    try:
        asyncio.run(run_step(step, dsn, session_id, Path(workdir)))
    except PowerLoopError as exc:
        # The parent re-raises it, so `power-loop demo` reports it as any command does
        # (a wrong API key is the provider's error, not a crash of the demo).
        _emit({"type": "Error", "error": type(exc).__name__, "message": exc.message,
               "details": {k: v for k, v in exc.details.items()
                           if isinstance(v, str | int | float | bool | None)}})
        sys.exit(2)
    _emit({"type": "Exit", "seconds": round(time.monotonic() - started, 3)})


if __name__ == "__main__":
    main(sys.argv[1:])
