"""Skills: SKILL.md folders the agent loads only when a task calls for them.

    python examples/skills.py

Only the skills' names and descriptions are in the request; the model loads a skill's
instructions with ``load_skill`` and reads its files with ``read_skill_file`` (a path
leading out of the skill's folder is refused, as an error the model reads). What it
loaded is in the session's history: a loop in another process sees the same.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from _common import data_dir, pick_llm

from power_loop import (
    ScriptedLLM,
    Skills,
    StatefulAgentLoop,
    ToolCallFinished,
    call_tool,
    reply,
)

SKILLS = Skills(Path(__file__).resolve().parent / "skills")  # read once, at start-up


async def main() -> None:
    print("catalog (all the model sees of the skills up front):")
    print(SKILLS.catalog())
    llm = pick_llm(ScriptedLLM([
        call_tool("load_skill", {"name": "release-notes"}),
        call_tool("read_skill_file", {"skill": "release-notes", "path": "../../README.md"}),
        call_tool("read_skill_file", {"skill": "release-notes", "path": "template.md"}),
        reply("## 1.4.0\n\n### Added\n- Skills: load instructions on demand.\n\n"
              "### Fixed\n- Exports keep big numbers exact."),
    ]))
    dsn = str(data_dir("skills") / "app.db")
    async with StatefulAgentLoop(llm=llm, dsn=dsn, tools=SKILLS.tools()) as loop:
        sid = await loop.new_session()
        text = "Release notes for 1.4.0: skills added; big numbers in exports fixed."
        async for event in loop.stream(text, session_id=sid):
            if isinstance(event, ToolCallFinished):
                status = "error" if event.is_error else "ok"
                first = event.output.splitlines()[0] if event.output else ""
                print(f"  {event.name:<15} {status:<5} {first[:80]}")
    # Another loop (another process, in real life) sees the skill as it was loaded.
    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn, tools=SKILLS.tools()) as cold:
        loaded = next(p for item in await cold.history(sid)
                      for p in item.message.tool_results if p.name == "load_skill")
        print("in the history:", loaded.content.splitlines()[0])
        print("answer:\n" + (await cold.history(sid))[-1].message.text)


if __name__ == "__main__":
    asyncio.run(main())
