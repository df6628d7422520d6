"""Structured output and provider configuration, offline or against a real model.

    python examples/providers.py
    POWER_LOOP_PROVIDER=anthropic POWER_LOOP_API_KEY=... POWER_LOOP_MODEL=claude-sonnet-4-5 \\
        python examples/providers.py

Offline it runs ScriptedLLM; with the variables set, the configured provider answers.
"""

from __future__ import annotations

import asyncio
import json

from _common import data_dir, pick_llm

from power_loop import (
    ScriptedLLM,
    StatefulAgentLoop,
    StructuredOutputError,
    UsageUpdated,
    reply,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population_millions": {"type": "number"},
    },
    "required": ["city", "country", "population_millions"],
    "additionalProperties": False,
}


async def main() -> None:
    llm = pick_llm(ScriptedLLM([
        reply(json.dumps({"city": "Lisbon", "country": "Portugal", "population_millions": 0.55})),
        reply("Lisbon is the capital of Portugal."),  # not JSON: refused by the schema
    ]))
    print(f"model: {llm.model} ({type(llm).__name__})")
    async with StatefulAgentLoop(llm=llm, dsn=str(data_dir("providers") / "app.db")) as loop:
        sid = await loop.new_session(system_prompt="Answer with JSON only.")
        async for event in loop.stream("Tell me about the capital of Portugal.", sid,
                                       output_schema=SCHEMA):
            if isinstance(event, UsageUpdated):
                print(f"usage: {event.usage} (cache hit ratio {event.cache_hit_ratio:.0%})")
        result = (await loop.history(sid))[-1].message.text
        print(f"answer: {result}")
        try:
            again = await loop.send("And in one sentence?", sid, output_schema=SCHEMA)
            print(f"parsed again: {again.output}")
        except StructuredOutputError as exc:
            print(f"refused ({exc.code}): {exc.problem}; the answer was {exc.text!r}")


if __name__ == "__main__":
    asyncio.run(main())
