"""``power-loop sessions tree``: the persisted tree of a send's sub-agents, as text and JSON."""

from __future__ import annotations

import json

import pytest

from power_loop import Store
from tests.agents.support import ROOT_TASK, WORKER, Plan, TreeModel
from tests.cli_support import run_cli

pytestmark = pytest.mark.timeout(180)


async def test_sessions_tree_prints_the_persisted_tree(store: Store, dsn: str,
                                                        table_prefix: str) -> None:
    plan: Plan = (((),), ())
    loop = TreeModel(plan).loop(store)
    root = await loop.new_session()
    await loop.send(ROOT_TASK, root)
    tree = await loop.session_tree(root)
    where = ("--dsn", dsn, "--prefix", table_prefix)

    text = await run_cli("sessions", "tree", root, *where)

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{root}  done  ") and "by its agents" in lines[0]
    nodes = list(tree.walk())
    for line, node in zip(lines[1:], nodes[1:], strict=True):
        assert node.session_id in line and WORKER in line and "done" in line
    assert lines[1].startswith(("├─ ", "└─ ")) and lines[2].lstrip("│ ").startswith("└─ ")

    as_json = json.loads((await run_cli("sessions", "tree", root, *where, "--json")).stdout)
    assert as_json["session"]["id"] == root and as_json["agent"] is None
    kids = as_json["children"]
    assert sorted(k["session"]["id"] for k in kids) == sorted(
        c.session_id for c in tree.children)
    assert all(k["agent"] == WORKER and k["link"]["depth"] == 1 for k in kids)
    assert sum(len(k["children"]) for k in kids) == 1

    missing = await run_cli("sessions", "tree", "nope", *where)
    assert missing.returncode != 0 and "nope" in missing.stderr
