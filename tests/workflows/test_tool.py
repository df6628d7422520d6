"""``run_workflow``: the model writes a spec; a bad one is a precise tool error, a good
one runs as a child workflow of the session and its output is the call's result."""

from __future__ import annotations

import json

from power_loop import LLMRequest, ScriptedLLM, Store, Turn, call_tool, reply
from power_loop.llm.messages import decode_message
from power_loop.store.children import child_session_id
from power_loop.workflows import workflow_tool
from tests.workflows.support import LeafModel

BAD = {"sequence": [{"agent": "up", "input": "{{steps.nope}}"}]}
GOOD = {"parallel": [{"agent": "up", "input": "{{input.word}}"},
                     {"agent": "echo", "input": "two"}]}


def host(request: LLMRequest) -> Turn:
    results = [r for m in request.messages if m.role == "tool" for r in m.tool_results]
    if not results:
        return call_tool("run_workflow", {"spec": json.dumps(BAD)})
    if len(results) == 1:
        return call_tool("run_workflow", {"spec": json.dumps(GOOD),
                                          "input": json.dumps({"word": "hi"})})
    return reply(f"got {results[-1].content}")


async def test_the_model_runs_a_workflow_it_wrote(store: Store) -> None:
    loop = LeafModel().loop(store, llm=ScriptedLLM(host))
    loop.tools.register(workflow_tool(loop))
    sid = await loop.new_session()
    result = await loop.send("go", sid)
    assert result.final_text == 'got ["HI", "echo(two)"]'
    results = [(r.content, r.is_error, r.call_id) for m in await store.read_messages(sid)
               if m.role == "tool" for r in decode_message(m.role, m.body).tool_results]
    assert results[0][1] and "'/sequence/0/input'" in results[0][0]
    assert "no step with id 'nope'" in results[0][0]
    workflow_id = child_session_id(sid, 0, results[1][2])
    status = await loop.workflow_status(workflow_id)
    assert status.status == "done" and status.output == ["HI", "echo(two)"]
    tree = await loop.session_tree(sid)
    assert [node.session_id for node in tree.children] == [workflow_id]
    assert len(tree.children[0].children) == 2  # the leaves, below the workflow
