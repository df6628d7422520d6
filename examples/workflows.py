"""Workflows: a multi-agent plan as JSON, journaled step by step, resumed after a stop.

    python examples/workflows.py

A first process reviews three files at once, then waits for a person's approval, and
stops there (as if it were killed). A second process, knowing only the DSN and the
workflow's id, sends the approval and resumes: the three reviews are read from the
journal, not asked for again, and the summary runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from _common import data_dir

from power_loop import AgentSpec, LLMRequest, ScriptedLLM, StatefulAgentLoop, Turn, reply

CALLS: Counter[str] = Counter()
SPEC = {"sequence": [
    {"foreach": "input.files", "max_concurrency": 3, "id": "reviews",
     "do": {"agent": "reviewer", "input": "Review {{item}}."}},
    {"wait": "approved", "id": "approval"},
    {"agent": "writer", "input": "Summarise {{steps.reviews}} for {{steps.approval.by}}."},
]}


def model(request: LLMRequest) -> Turn:  # offline: answers from the task
    task = request.messages[0].text
    CALLS[task] += 1
    if task.startswith("Review"):
        return reply(f"{task.split()[1].rstrip('.')}: looks fine")
    return reply(f"All three reviewed; approved by {task.rsplit(' ', 1)[1].rstrip('.')}")


def agents() -> list[AgentSpec]:
    llm = ScriptedLLM(model)
    return [AgentSpec("reviewer", "Reviews one file.", "You review code.", llm=llm),
            AgentSpec("writer", "Writes summaries.", "You summarise.", llm=llm)]


async def main() -> None:
    dsn = str(data_dir("workflows") / "workflows.db")
    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn, agents=agents()) as first:
        wid = await first.start_workflow(SPEC, {"files": ["a.py", "b.py", "c.py"]})
        for _ in range(600):  # until the workflow reaches its wait step
            if any(s.status == "waiting" for s in (await first.workflow_status(wid)).steps):
                break
            await asyncio.sleep(0.05)
        print("first process, waiting for approval:")
        for step in (await first.workflow_status(wid)).steps:
            print(f"  {step.path:22} {step.kind:6} {step.status:8} {step.output or ''}")
    # Closing the first loop stopped its executor (a killed process would leave its
    # lease to lapse instead). Another process goes on.
    async with StatefulAgentLoop(llm=ScriptedLLM([]), dsn=dsn, agents=agents()) as second:
        await second.signal_workflow(wid, "approved", {"by": "ana"})
        print("second process:", await second.resume_workflow(wid))
    print("model calls per task:", dict(CALLS))


if __name__ == "__main__":
    asyncio.run(main())
