"""A fresh process that sends to a session with skills read anew from the folder.

``python -m tests.skills.child DSN TABLE_PREFIX SKILLS_FOLDER SESSION_ID TEXT...``
prints, as one JSON list, the hex of the canonical bytes of every request it made.
"""

from __future__ import annotations

import asyncio
import json
import sys

from power_loop import ScriptedLLM, Skills, StatefulAgentLoop
from tests.skills.support import conversation


async def main(dsn: str, prefix: str, folder: str, session_id: str, texts: list[str]) -> None:
    llm = ScriptedLLM(conversation)
    skills = Skills(folder)
    async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=prefix, store_grace=0,
                                 tools=skills.tools()) as loop:
        for text in texts:
            await loop.send(text, session_id=session_id)
    print(json.dumps([r.canonical_bytes().hex() for r in llm.requests]))


if __name__ == "__main__":
    dsn, prefix, folder, session_id, *texts = sys.argv[1:]
    asyncio.run(main(dsn, prefix, folder, session_id, texts))
