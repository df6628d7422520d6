"""MCP tools across processes, on every backend: a SIGKILL mid-call resumed in a fresh
process (the read-only tool runs again, the unannotated one's outcome is unknown), and
the same requests from a cold process as from a warm loop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from power_loop import LLMRequest, ScriptedLLM, StatefulAgentLoop
from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.durability.harness import REPO, WAIT, StoreView, child_env, wait_until
from tests.mcp.agent_child import SCRIPTS, McpArgs
from tests.mcp.support import calls, stdio_server


def start(args: McpArgs) -> subprocess.Popen[bytes]:
    with Path(args.out).with_suffix(".log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.mcp.agent_child", args.to_json()],
                                cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[bytes], args: McpArgs) -> dict[str, Any]:
    code = proc.wait(WAIT)
    report: dict[str, Any] = json.loads(Path(args.out).read_text())
    assert code == 0, f"child failed: {report}\n{Path(args.out).with_suffix('.log').read_text()}"
    return report


def test_sigkill_mid_mcp_call_resumes_in_a_fresh_process(view: StoreView,
                                                         tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    sid = view.new_session()
    args = McpArgs(view.dsn, view.prefix, sid, "send", "both", str(tmp_path),
                   str(tmp_path / "send.json"))
    proc = start(args)
    try:
        wait_until(lambda: (marks / "r").exists() and (marks / "w").exists(),
                   "both MCP calls in flight")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        for mark in marks.iterdir():  # the orphaned server, if it outlived its client
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(mark.read_text() or "0") or -1, signal.SIGKILL)
    assert sorted(calls(tmp_path)) == ["wait_read r", "wait_write w"]
    wait_until(lambda: view.lease_lapsed(sid), "the dead process's lease to lapse")
    again = McpArgs(view.dsn, view.prefix, sid, "resume", "answer", str(tmp_path),
                    str(tmp_path / "resume.json"))
    report = finish(start(again), again)
    assert report["final_text"] == "done"
    # The read-only tool ran again (once); the unannotated one did not.
    assert sorted(calls(tmp_path)) == ["wait_read r", "wait_read r", "wait_write w"]
    results = {p["name"]: p for m in view.snapshot(sid).wire() if m["role"] == "tool"
               for p in m["parts"]}
    assert results["t__wait_read"]["content"] == "wait_read done r"
    assert results["t__wait_write"]["content"] == UNKNOWN_OUTCOME
    assert results["t__wait_write"]["is_error"]


def test_cold_and_warm_loops_send_byte_identical_requests(view: StoreView,
                                                          tmp_path: Path) -> None:
    server = stdio_server(tmp_path)
    warming, warm_sid, cold_sid = view.new_session(), view.new_session(), view.new_session()

    async def warm_requests() -> list[LLMRequest]:
        try:
            await StatefulAgentLoop(llm=ScriptedLLM(["ok"]), store=view.store,
                                    tools=[server]).send("warm up", warming)
            assert server.connected
            llm = ScriptedLLM(SCRIPTS["hello"])
            # A loop built per request finds the connection and the tool list warm.
            result = await StatefulAgentLoop(llm=llm, store=view.store,
                                             tools=[server]).send("hello", warm_sid)
            assert result.final_text == "done"
            return list(llm.requests)
        finally:
            await server.aclose()

    requests: list[LLMRequest] = view.run(warm_requests())
    args = McpArgs(view.dsn, view.prefix, cold_sid, "send", "hello", str(tmp_path),
                   str(tmp_path / "cold.json"))
    cold = finish(start(args), args)
    assert len(requests) == 2 and any(t.name == "t__echo" for t in requests[0].tools)
    assert cold["canonical"] == [r.canonical_bytes().decode() for r in requests]
    assert cold["ordered"] == [json.dumps(r.to_json(), ensure_ascii=False) for r in requests]
