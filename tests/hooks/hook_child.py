"""A child process for the hook crash tests: one loop with the :class:`Policy` hook.

Run as ``python -m tests.hooks.hook_child '<json>'`` with ``dsn``, ``prefix``,
``session_id``, ``op`` (``send`` or ``resume``), ``text``, ``log`` (the hooks' log) and
``out`` (where the result's text goes). A crash point (``POWER_LOOP_CRASH_AT``) ends it
with no output at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from power_loop import open_store
from tests.hooks.policy import Policy
from tests.hooks.support import FixedFold, make_loop

CRASH_TTL = 1.0
"""The lease of a child: short, so the resuming child waits little for a dead one's."""


async def run(args: dict[str, Any]) -> str | None:
    store = await open_store(args["dsn"], table_prefix=args["prefix"])
    try:
        loop = make_loop(store, [Policy(args["log"])], fold=FixedFold(), lease_ttl=CRASH_TTL)
        if args["op"] == "send":
            return (await loop.send(args["text"], session_id=args["session_id"])).final_text
        result = await loop.resume(args["session_id"])
        return None if result is None else result.final_text
    finally:
        await store.aclose()


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    text = asyncio.run(run(args))
    Path(args["out"]).write_text(json.dumps({"final_text": text}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
