"""Tools: schemas from type hints, validation, errors the model can fix, parallel calls.

    python examples/tools_showcase.py
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from _common import data_dir, pick_llm

from power_loop import (
    ScriptedLLM,
    StatefulAgentLoop,
    ToolCallFinished,
    ToolError,
    ToolRegistry,
    call_tools,
    reply,
    tool,
)


class Unit(Enum):
    CELSIUS = "C"
    FAHRENHEIT = "F"


@dataclass
class Window:
    start: str
    end: str


@tool(safe_to_repeat=True, timeout=5)
async def forecast(city: str, window: Window, unit: Unit = Unit.CELSIUS) -> str:
    """Forecast for a city over a time window.

    Args:
        city: City name.
        window: Start and end, ISO dates.
        unit: Temperature unit.
    """
    return f"{city} {window.start}..{window.end}: 21°{unit.value}"


@tool
def transfer(amount_cents: int, currency: Literal["EUR", "USD"]) -> str:
    """Move money between accounts (not safe to repeat)."""
    if amount_cents > 10_000:
        raise ToolError("transfers above 100.00 need approval; ask the user")
    return f"moved {amount_cents / 100:.2f} {currency}"


async def main() -> None:
    registry = ToolRegistry([forecast, transfer])
    print("forecast schema:", json.dumps(forecast.spec.parameters)[:150], "...")
    llm = pick_llm(ScriptedLLM([
        call_tools(
            ("forecast", {"city": "Oslo", "window": {"start": "2026-12-01", "end": "2026-12-02"}}),
            ("transfer", {"amount_cents": "lots", "currency": "EUR"}),   # wrong type
            ("transfer", {"amount_cents": 50_000, "currency": "EUR"}),   # ToolError
            ("transfr", {}),                                             # unknown tool
            ("forecast", '{"city": "Oslo"'),                             # malformed JSON
        ),
        reply("Oslo will be 21°C. The transfer needs your approval first."),
    ]))
    async with StatefulAgentLoop(llm=llm, dsn=str(data_dir("tools") / "app.db"),
                                 tools=registry) as loop:
        sid = await loop.new_session()
        async for event in loop.stream("Weather in Oslo, and pay 500 EUR", session_id=sid):
            if isinstance(event, ToolCallFinished):
                status = "error" if event.is_error else "ok"
                print(f"  {event.name:<9} {status:<5} {event.output[:90]}")
        print("answer:", (await loop.history(sid))[-1].message.text)


if __name__ == "__main__":
    asyncio.run(main())
