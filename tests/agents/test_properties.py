"""Property test: random trees of agents, cut off at random points, resumed by fresh loops.

Hypothesis draws a plan (a tree of agents up to depth 3 with up to 3 children per node,
started together), how many children of one send may run at once, and a list of crash
points. The root send runs in a task that hands its sends over when cancelled (as a
worker's do: ``CANCEL_MEANS_RELEASE``) and is cancelled at the first crash point (its
n-th event, children's included); a fresh loop then resumes the root, cut off at the
next point, and so on, until a run goes through. Then:

* the root's answer is the plan's: every parent got each child's answer;
* each spawn call has exactly one child session, whose id is derived from the call, and
  no other child exists anywhere in the tree; every node's send is done;
* every leaf's unsafe tool ran at most once (a call cut off by a crash gets the "outcome
  unknown" result instead of a second run);
* usage rolls up: each send's stored usage is its own model calls plus its children's
  sends, with the children's part kept apart, and the root's result agrees with the store;
* the tree is persisted: ``session_tree`` has one node per planned agent, at its depth.

Profiles: ``ci`` (the default: 20 derandomized examples per backend) or
``HYPOTHESIS_PROFILE=deep`` (150 random examples).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import Event, SendResult, Store, Usage
from power_loop.llm.messages import decode_message
from power_loop.loop.driver import UNKNOWN_OUTCOME
from tests.agents.support import (
    ROOT_TASK,
    Plan,
    TreeModel,
    check_tree,
    count_nodes,
    expected,
    label,
    run_until,
)

PROFILES = {
    "ci": settings(max_examples=20, derandomize=True, database=None),
    "deep": settings(max_examples=150),
}
RUNS = settings(PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"]),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
Emit = Callable[[Event], None]
KEY = "the-task"


def plans(levels: int) -> st.SearchStrategy[Plan]:
    """A node with at most ``levels`` levels of agents below it."""
    if levels == 0:
        return st.just(())
    return st.one_of(st.just(()),
                     st.lists(plans(levels - 1), min_size=1, max_size=3).map(tuple))


@dataclass(frozen=True)
class Scenario:
    plan: Plan
    parallel: int
    crashes: tuple[int, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    plan = draw(st.lists(plans(2), min_size=1, max_size=3).map(tuple))
    crashes = draw(st.lists(st.integers(1, 12 * count_nodes(plan)), min_size=1, max_size=4))
    return Scenario(plan, draw(st.integers(1, 3)), tuple(crashes))


def depth_of(plan: Plan) -> int:
    return 1 + max(map(depth_of, plan)) if plan else 0


@pytest.mark.timeout(900)
@RUNS
@given(scenario=scenarios())
async def test_random_trees_survive_random_crashes(store: Store, scenario: Scenario) -> None:
    plan = scenario.plan
    model = TreeModel(plan)
    event(f"depth {depth_of(plan)}")
    event(f"{len(scenario.crashes)} crash points")

    root = await model.loop(store).new_session()

    async def first(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event, max_parallel_agents=scenario.parallel
                                ).send(ROOT_TASK, root, request_key=KEY)

    async def again(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event,
                                max_parallel_agents=scenario.parallel).resume(root)

    result = await run_until(first, scenario.crashes[0])
    crashed = int(result is None)
    for point in (*scenario.crashes[1:], None):
        if result is not None or (await store.get_session(root)).pending_send is None:
            break  # (a run cut off just after the root finished leaves nothing to resume)
        result = await run_until(again, point)
        crashed += result is None
    event(f"cut off {crashed} times")
    while (await store.get_session(root)).pending_send is not None:
        result = await run_until(again, None)
    # A cold read (an idempotent retry of the first send) gives the stored result.
    cold = await model.loop(store).send(ROOT_TASK, root, request_key=KEY)
    if result is not None:
        assert (cold.final_text, cold.usage, cold.children_usage) == (
            result.final_text, result.usage, result.children_usage)

    # The answer: every parent got each child's answer.
    assert cold.final_text == expected(plan)
    # One child per call, nothing else, every send done, usage rolled up.
    tree = await store.session_tree(root)
    await check_tree(store, plan, tree)
    nodes = list(tree.walk())
    assert len(nodes) == count_nodes(plan)
    assert max(n.link.depth if n.link else 0 for n in nodes) == depth_of(plan)
    # The root's result agrees with the store (a resumed run reads the rest from it).
    stored = await store.get_send(root, 0)
    assert Usage.from_json(stored.usage) == cold.usage
    assert Usage.from_json(stored.usage.get("children")) == cold.children_usage
    children = Usage()
    for child in tree.children:
        children = children + Usage.from_json(child.sends[0].usage)
    assert cold.children_usage == children
    # Unsafe leaf tools: at most once each; a cut-off call is answered "outcome unknown".
    runs = Counter(r["tag"] for r in model.runs)
    assert all(n == 1 for n in runs.values()), runs
    assert all(r["attempt"] == 1 for r in model.runs)
    for node in nodes:
        if node.children or node is tree:
            continue
        records = await store.read_messages(node.session_id)
        (result_part,) = [r for m in records if m.role == "tool"
                          for r in decode_message(m.role, m.body).tool_results]
        tag = decode_message("user", records[0].body).text.removeprefix("task ")
        if result_part.content == UNKNOWN_OUTCOME:
            event("a leaf's outcome was unknown")
        else:
            assert runs[tag] == 1 and result_part.content == f"worked {tag}"
    assert {label(p) for p in _leaves(plan)} >= set(runs)


def _leaves(plan: Plan, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if not plan:
        return [path]
    return [leaf for i, child in enumerate(plan) for leaf in _leaves(child, (*path, i))]
