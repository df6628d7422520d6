"""Skills in a durable loop: the same request from any process, a history that holds.

On SQLite, PostgreSQL and MySQL: a cold loop (a fresh ``Skills`` and a fresh loop per
send, and once a fresh process) builds the very bytes a warm one does; a skill loaded
before its file changed reaches every later request as it was loaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from power_loop import (
    LLMRequest,
    ScriptedLLM,
    Skills,
    StatefulAgentLoop,
    Store,
    ToolCallPart,
)
from tests.loop.support import crash_after_tool_calls
from tests.skills.support import PDF_BODY, REFERENCE, conversation, skill_file, write_skills

REPO = Path(__file__).resolve().parents[2]
STEPS = ["hello", "fill", "thanks", "again"]


async def test_cold_and_warm_loops_build_identical_requests(store: Store, dsn: str,
                                                            table_prefix: str,
                                                            tmp_path: Path) -> None:
    root = write_skills(tmp_path)
    warm_llm = ScriptedLLM(conversation)
    warm = StatefulAgentLoop(llm=warm_llm, store=store, tools=Skills(root).tools())
    warm_sid = await warm.new_session(system_prompt="Use your skills.")
    cold_sid = await warm.new_session(system_prompt="Use your skills.")
    for step in STEPS:
        await warm.send(step, session_id=warm_sid)

    cold_requests: list[LLMRequest] = []
    for step in STEPS:
        llm = ScriptedLLM(conversation)
        async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=table_prefix,
                                     tools=Skills(root).tools()) as cold:
            await cold.send(step, session_id=cold_sid)
        cold_requests.extend(llm.requests)

    assert len(warm_llm.requests) == len(cold_requests) == 8
    for warm_request, cold_request in zip(warm_llm.requests, cold_requests, strict=True):
        assert warm_request.canonical_bytes() == cold_request.canonical_bytes()
    # The run covered what it claims to: the skill and its file are in the history.
    last = warm_llm.requests[-1]
    results = [r for m in last.messages for r in m.tool_results]
    assert [r.name for r in results] == ["load_skill", "read_skill_file"] * 2
    assert PDF_BODY in results[0].content and results[1].content == REFERENCE
    assert [t.name for t in last.tools] == ["load_skill", "read_skill_file"]


async def test_a_fresh_process_builds_identical_requests(store: Store, dsn: str,
                                                         table_prefix: str,
                                                         tmp_path: Path) -> None:
    root = write_skills(tmp_path)
    warm_llm = ScriptedLLM(conversation)
    warm = StatefulAgentLoop(llm=warm_llm, store=store, tools=Skills(root).tools())
    warm_sid, cold_sid = await warm.new_session(), await warm.new_session()
    for step in STEPS[:2]:
        await warm.send(step, session_id=warm_sid)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.skills.child", dsn, table_prefix, str(root), cold_sid,
        *STEPS[:2], cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    cold = json.loads(out)
    assert len(cold) == len(warm_llm.requests) == 4
    assert cold == [r.canonical_bytes().hex() for r in warm_llm.requests]


async def test_a_changed_skill_file_does_not_change_a_past_request(
        store: Store, dsn: str, table_prefix: str, tmp_path: Path) -> None:
    root = write_skills(tmp_path)
    first = StatefulAgentLoop(llm=ScriptedLLM(conversation), store=store,
                              tools=Skills(root).tools())
    sid = await first.new_session()
    await first.send("fill", session_id=sid)

    # The skill is rewritten: its body, its file and its description.
    (root / "pdf-forms" / "SKILL.md").write_text(skill_file(
        "pdf-forms", "Fill PDF forms, version two.", "# Version two\n\nNew steps."))
    (root / "pdf-forms" / "reference.md").write_text("Rewritten reference.\n")

    llm = ScriptedLLM(conversation)
    async with StatefulAgentLoop(llm=llm, dsn=dsn, table_prefix=table_prefix,
                                 tools=Skills(root).tools()) as fresh:
        await fresh.send("again", session_id=sid)
        history = await fresh.history(sid)

    rebuilt = llm.requests[0]
    past = [r for m in rebuilt.messages for r in m.tool_results]
    # What the model saw then is what it sees now: the stored results, not the files.
    assert [r.name for r in past] == ["load_skill", "read_skill_file"]
    assert PDF_BODY in past[0].content and "Version two" not in past[0].content
    assert past[1].content == REFERENCE
    # A new load reads the folder as it is now (the catalog too).
    assert "version two" in rebuilt.tools[0].description
    now = [r for m in llm.requests[-1].messages for r in m.tool_results][2:]
    assert "# Version two" in now[0].content and PDF_BODY not in now[0].content
    assert now[1].content == "Rewritten reference.\n"
    stored = [p.content for item in history for p in item.message.tool_results]
    assert stored == [past[0].content, past[1].content, now[0].content, now[1].content]


async def test_skill_calls_cut_off_by_a_crash_are_run_again_on_resume(
        store: Store, tmp_path: Path) -> None:
    root = write_skills(tmp_path)
    loop = StatefulAgentLoop(llm=ScriptedLLM(conversation), store=store,
                             tools=Skills(root).tools())
    sid = await loop.new_session()
    calls = [ToolCallPart("c1", "load_skill", '{"name": "pdf-forms"}'),
             ToolCallPart("c2", "read_skill_file",
                          '{"skill": "pdf-forms", "path": "reference.md"}')]
    await crash_after_tool_calls(store, sid, "fill", calls)

    result = await loop.resume(sid)

    assert result is not None and result.status == "done"
    stored = [p for item in await loop.history(sid) for p in item.message.tool_results]
    assert [(p.call_id, p.is_error) for p in stored] == [("c1", False), ("c2", False)]
    assert PDF_BODY in stored[0].content and stored[1].content == REFERENCE
