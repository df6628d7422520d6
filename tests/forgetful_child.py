"""A program that forgets to close what it opened: a store and an agent loop's store.

``python -m tests.forgetful_child DSN PREFIX`` sends once, never closes anything, and
must still exit on its own (``asyncio.run`` returns, then the interpreter shuts down).
"""

from __future__ import annotations

import asyncio
import sys

from power_loop import ScriptedLLM, StatefulAgentLoop, open_store


async def main(dsn: str, prefix: str) -> None:
    store = await open_store(dsn, table_prefix=prefix)
    await store.create_session("forgotten")
    loop = StatefulAgentLoop(llm=ScriptedLLM(["hello back"]), dsn=dsn, table_prefix=prefix)
    session_id = await loop.new_session()
    result = await loop.send("hello", session_id=session_id)
    print(f"sent: {result.final_text}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    print("asyncio.run returned", flush=True)
