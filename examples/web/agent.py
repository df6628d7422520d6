"""The agent both processes run: its model, its tools and its configuration.

The web process and the worker build their loops from :func:`make_loop`, so a send the
web process started and died in is finished by the worker with the same tools.

Offline (no ``POWER_LOOP_API_KEY``), the model is a :class:`~power_loop.ScriptedLLM`
answering from what it reads, so any process continues any conversation:

* "pay Bob 40" calls ``wire_money``, which waits for a person's approval;
* "research tides" calls ``research``, a slow tool (kill the web server meanwhile);
* "ask me" puts a question to the user (``ask_user``);
* "remind me" schedules a wake-up a worker fires a few seconds later;
* anything else is echoed, streamed in small pieces.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    LLMService,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    TimerLimits,
    Tool,
    Turn,
    ask_user_tool,
    call_tool,
    create_llm_service_from_env,
    reply,
    tool,
)
from power_loop.events import Event

SYSTEM_PROMPT = ("You are the power_loop web demo's assistant. Be brief. Ask for "
                 "approval-gated tools only when the user asks for them.")


@dataclass(frozen=True, slots=True)
class Settings:
    """What both processes are started with.

    Attributes:
        dsn: The store (a SQLite path, or a PostgreSQL or MySQL DSN).
        table_prefix: The store's table prefix.
        lease_ttl: Seconds a session lease lasts: how soon a worker takes over the send
            of a web process that died.
        research_seconds: How long the offline ``research`` tool takes.
    """

    dsn: str = "power-loop-web.db"
    table_prefix: str = "pl_"
    lease_ttl: float = 10.0
    research_seconds: float = 4.0


def make_tools(settings: Settings) -> list[Tool]:
    """The demo's tools (and ``ask_user``)."""

    @tool(requires_approval=True)
    def wire_money(to: str, amount: int) -> str:
        """Wire money to someone (waits for the user's approval).

        Args:
            to: Who receives it.
            amount: How much, in euros.
        """
        return f"wired {amount} EUR to {to}"

    @tool(safe_to_repeat=True)
    async def research(topic: str) -> str:
        """Look a topic up (slowly): safe to run again after a crash.

        Args:
            topic: What to look up.
        """
        await asyncio.sleep(settings.research_seconds)
        return f"3 notes about {topic}: it is well documented, widely used, and durable."

    return [wire_money, research, ask_user_tool()]


def _offline_turn(request: LLMRequest) -> Turn:
    """The scripted model: the next turn, decided from the conversation alone."""
    last = request.messages[-1]
    if last.role == "tool":
        results = last.tool_results
        if any(r.is_error for r in results):
            return reply("Understood: I did not do it. " + results[0].content[:200])
        if results and results[0].name == "ask_user":
            return reply(f"Thanks, noted: {results[0].content}")
        if results and results[0].name == "schedule_wakeup":
            return reply("I will get back to you in a few seconds.")
        return reply(f"Done: {results[0].content}" if results else "Done.", chunks=6,
                     chunk_delay=0.05)
    text = last.text
    lowered = text.lower()
    if last.role == "user" and last.meta.get("source") == "timer":
        return reply(f"Reminder: {text}", chunks=4)
    if "pay" in lowered or "wire" in lowered:
        amount = int(m.group()) if (m := re.search(r"\d{1,9}", text)) else 40
        name = re.search(r"(?:pay|wire)\s+([A-Z][a-z]{0,20})", text)
        return call_tool("wire_money", {"to": name.group(1) if name else "Bob",
                                        "amount": amount},
                         text="I can do that once you approve it.")
    if "research" in lowered:
        return call_tool("research", {"topic": text[:80]}, text="Looking it up...")
    if "ask" in lowered:
        return call_tool("ask_user", {"question": "Which city should I book?"})
    if "remind" in lowered:
        return call_tool("schedule_wakeup", {"message": "Time to stretch!",
                                             "delay_seconds": 3})
    return reply(f"You said: {text}\nTry \"pay Bob 40\", \"research tides\", "
                 "\"ask me\" or \"remind me\".", chunks=8, chunk_delay=0.03)


def make_llm() -> LLMService:
    """The real model when ``POWER_LOOP_API_KEY`` is set, else the scripted one."""
    if os.environ.get("POWER_LOOP_API_KEY"):
        return create_llm_service_from_env()
    return ScriptedLLM(_offline_turn)


def make_config(settings: Settings,
                on_event: Callable[[Event], None] | None = None) -> AgentLoopConfig:
    """The loop's configuration (``on_event``: where one request's events go)."""
    return AgentLoopConfig(system_prompt=SYSTEM_PROMPT, lease_ttl=settings.lease_ttl,
                           timers=TimerLimits(max_scheduled=5, min_delay=1),
                           on_event=on_event)


def make_loop(store: Store, settings: Settings, llm: LLMService, tools: list[Tool],
              on_event: Callable[[Event], None] | None = None) -> StatefulAgentLoop:
    """A loop over the process's store: cheap, built per request."""
    return StatefulAgentLoop(llm=llm, store=store, tools=tools,
                             config=make_config(settings, on_event))
