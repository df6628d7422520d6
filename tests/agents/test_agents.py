"""Sub-agents on every backend: answers, usage, events, limits, failures, cancellation,
re-attachment after a crash, and workers finishing stranded trees."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextlib import aclosing

import pytest

from conformance.waiting import eventually
from power_loop import (
    AgentSpec,
    ChildEvent,
    Event,
    InvalidArgumentError,
    LLMRequest,
    ScriptedLLM,
    SendFinished,
    SendResult,
    SendStarted,
    StatefulAgentLoop,
    Store,
    ToolCallStarted,
    Turn,
    Usage,
    call_tool,
)
from power_loop.llm.messages import decode_message
from power_loop.loop.driver import UNKNOWN_OUTCOME
from power_loop.store.children import child_session_id
from tests.agents.support import (
    ROOT_TASK,
    WORKER,
    Plan,
    TreeModel,
    check_tree,
    expected,
    run_until,
)
from tests.workers.inproc import running, worker

Emit = Callable[[Event], None]


async def crash_point(store: Store, plan: Plan, match: Callable[[Event], bool]) -> int:
    """The number of the first event of a run of ``plan`` that ``match`` picks."""
    loop = TreeModel(plan).loop(store)
    seen: list[Event] = []
    async for event in loop.stream(ROOT_TASK, await loop.new_session()):
        seen.append(event)
    return next(i for i, e in enumerate(seen, 1) if match(e))


async def tool_results(store: Store, session_id: str) -> list[tuple[str, bool]]:
    return [(r.content, r.is_error) for m in await store.read_messages(session_id)
            if m.role == "tool" for r in decode_message(m.role, m.body).tool_results]


async def test_children_answer_and_their_usage_rolls_up(store: Store) -> None:
    plan: Plan = (((), ()), ())
    model = TreeModel(plan)
    loop = model.loop(store)
    root = await loop.new_session()

    result = await loop.send(ROOT_TASK, root)

    assert result.final_text == expected(plan)
    tree = await loop.session_tree(root)
    await check_tree(store, plan, tree)
    assert [n.agent for n in tree.walk()] == [None, WORKER, WORKER, WORKER, WORKER]
    assert sorted(r["tag"] for r in model.runs) == ["0.0", "0.1", "1"]
    children = Usage()
    for child in tree.children:
        children = children + Usage.from_json(child.sends[0].usage)
    assert result.children_usage == children and children.total_tokens > 0
    assert result.usage.total_tokens > children.total_tokens
    # A cold read (the send record, an idempotent retry) agrees.
    stored = await store.get_send(root, 0)
    assert Usage.from_json(stored.usage) == result.usage
    assert Usage.from_json(stored.usage["children"]) == result.children_usage


async def test_the_stream_carries_the_tree_tagged_by_session_and_depth(store: Store) -> None:
    plan: Plan = (((),),)
    loop = TreeModel(plan).loop(store)
    root = await loop.new_session()

    events: list[Event] = []
    async for event in loop.stream(ROOT_TASK, root):
        events.append(event)

    tagged = [e for e in events if isinstance(e, ChildEvent)]
    child = child_session_id(root, 0, next(e.call_id for e in events
                                         if isinstance(e, ToolCallStarted)))
    depth1 = {e.session_id for e in tagged if e.depth == 1}
    depth2 = [e for e in tagged if e.depth == 2]
    assert depth1 == {child}
    assert {e.parent_session_id for e in depth2} == {child}
    assert all(e.event.session_id == e.session_id and e.agent == WORKER for e in tagged)
    finished = [e for e in tagged if isinstance(e.event, SendFinished)]
    assert [e.depth for e in finished] == [2, 1]
    assert isinstance(events[-1], SendFinished) and events[-1].session_id == root
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    # The root's own events are the root's: a UI showing the answer is not disturbed.
    assert all(e.session_id == root for e in events if not isinstance(e, ChildEvent))


async def test_too_many_children_is_a_tool_error(store: Store) -> None:
    plan: Plan = ((), (), ())
    loop = TreeModel(plan).loop(store, max_agents_per_send=2)
    root = await loop.new_session()

    result = await loop.send(ROOT_TASK, root)

    assert len((await loop.session_tree(root)).children) == 2
    refused = [text for text, error in await tool_results(store, root) if error]
    assert len(refused) == 1 and "already started 2 agents" in refused[0]
    assert "already started" in result.final_text


async def test_too_deep_is_a_tool_error(store: Store) -> None:
    plan: Plan = (((),),)
    loop = TreeModel(plan).loop(store, max_agent_depth=1)
    root = await loop.new_session()

    await loop.send(ROOT_TASK, root)

    (child,) = (await loop.session_tree(root)).children
    assert child.children == () and child.status == "done"
    ((text, error),) = await tool_results(store, child.session_id)
    assert error and "nested 1 deep" in text


async def test_an_unknown_agent_is_a_tool_error(store: Store) -> None:
    model = TreeModel(((),))
    original = model.script

    def script(request: LLMRequest) -> Turn:
        turn = original(request)
        if turn.tool_calls and turn.tool_calls[0].name == "spawn_agent":
            return call_tool("spawn_agent", {"agent": "nobody", "task": "task 0"})
        return turn

    model.llm = ScriptedLLM(script)
    loop = model.loop(store)
    root = await loop.new_session()
    await loop.send(ROOT_TASK, root)
    ((text, error),) = await tool_results(store, root)
    assert error and "no agent named 'nobody'" in text and WORKER in text
    assert (await loop.session_tree(root)).children == ()


def test_spawn_agent_is_safe_to_repeat_and_not_cut_off_by_the_tool_timeout() -> None:
    loop = TreeModel(((),)).loop_on(":memory:", tool_timeout=0.01)
    spawn = loop.tools.get("spawn_agent")
    assert spawn is not None and spawn.safe_to_repeat and spawn.timeout == math.inf
    assert WORKER in spawn.description and "Does one node" in spawn.description


def test_agent_specs_are_checked() -> None:
    with pytest.raises(InvalidArgumentError):
        AgentSpec("has space", "x")
    with pytest.raises(InvalidArgumentError):
        AgentSpec("a", "")
    a, other_a = AgentSpec("a", "one"), AgentSpec("a", "two")
    with pytest.raises(InvalidArgumentError):
        StatefulAgentLoop(llm=TreeModel(()).llm, dsn=":memory:", agents=[a, other_a])
    with pytest.raises(InvalidArgumentError):
        StatefulAgentLoop(llm=TreeModel(()).llm, dsn=":memory:",
                          agents=[AgentSpec("b", "b", agents=[other_a]), a])


async def test_a_failing_child_model_is_a_tool_error_and_the_child_stays_resumable(
        store: Store) -> None:
    plan: Plan = ((),)
    model = TreeModel(plan, failing=True)
    loop = model.loop(store)
    root = await loop.new_session()

    result = await loop.send(ROOT_TASK, root)

    ((text, error),) = await tool_results(store, root)
    (node,) = (await loop.session_tree(root)).children
    assert node.link is not None
    child = child_session_id(root, 0, node.link.parent_call)
    assert error and "LLMUnavailableError" in text and child in text
    assert result.status == "done" and result.children_usage == Usage()
    assert (await store.get_session(child)).pending_send == 0
    # The child is resumed later with its own agent's tools (the root loop routes it).
    model.failing = False
    resumed = await loop.resume(child)
    assert resumed is not None and resumed.final_text == "leaf 0"
    assert [r["tag"] for r in model.runs] == ["0"]


async def test_cancelling_the_parent_cancels_its_children(store: Store) -> None:
    plan: Plan = ((), ())
    model = TreeModel(plan, gate=asyncio.Event())
    loop = model.loop(store)
    root = await loop.new_session()

    working = 0
    async with aclosing(loop.stream(ROOT_TASK, root)) as events:
        async for event in events:
            if (isinstance(event, ChildEvent) and isinstance(event.event, ToolCallStarted)):
                working += 1
                if working == 2:
                    break

    tree = await loop.session_tree(root)
    assert [n.status for n in tree.walk()] == ["cancelled"] * 3
    for node in tree.walk():
        assert (await store.get_session(node.session_id)).lease_owner is None


async def test_parallel_children_are_bounded(store: Store) -> None:
    plan: Plan = ((), (), (), ())
    loop = TreeModel(plan, delay=0.02).loop(store, max_parallel_agents=2,
                                            max_agents_per_send=4)
    root = await loop.new_session()
    running_now, most = 0, 0
    async for event in loop.stream(ROOT_TASK, root):
        if isinstance(event, ChildEvent) and event.depth == 1:
            if isinstance(event.event, SendStarted):
                running_now += 1
                most = max(most, running_now)
            elif isinstance(event.event, SendFinished):
                running_now -= 1
    assert most == 2
    await check_tree(store, plan, await loop.session_tree(root))


async def test_a_parent_resumed_after_a_crash_reattaches_to_its_child(store: Store) -> None:
    plan: Plan = ((),)
    model = TreeModel(plan)
    root = await model.loop(store).new_session()
    tool_event = await crash_point(store, plan, lambda e: isinstance(e, ChildEvent) and
                                   isinstance(e.event, ToolCallStarted))

    async def first(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event).send(ROOT_TASK, root)

    assert await run_until(first, tool_event) is None
    assert [r["tag"] for r in model.runs] == ["0"]  # ran, result never stored
    (child,) = (await store.session_tree(root)).children
    assert child.status == "pending" and child.link is not None

    async def again(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event).resume(root)

    result = await run_until(again, None)
    assert isinstance(result, SendResult) and result.final_text == expected(plan)
    assert [r["tag"] for r in model.runs] == ["0"]  # the unsafe tool never ran again
    assert ((UNKNOWN_OUTCOME, True) in await tool_results(store, child.session_id))
    await check_tree(store, plan, await store.session_tree(root))


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_worker_finishes_a_stranded_parent_and_its_stranded_child(
        store: Store, concurrency: int) -> None:
    plan: Plan = (((),), ())
    model = TreeModel(plan)
    root = await model.loop(store).new_session()

    async def first(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event).send(ROOT_TASK, root)

    # Cut off as the grandchild's tool starts: the whole tree is left pending, leases
    # free, as a dead process leaves it.
    at = await crash_point(store, plan, lambda e: isinstance(e, ChildEvent) and e.depth == 2
                           and isinstance(e.event, ToolCallStarted))
    crashed = await run_until(first, at + 1)
    pending = [n for n in (await store.session_tree(root)).walk() if n.status == "pending"]
    assert crashed is None and pending
    # Even a session whose lease was being taken as the cancellation came (a write in
    # flight) is handed back: else the worker would wait out its lease_ttl.
    assert [(await store.get_session(n.session_id)).lease_owner for n in pending] \
        == [None] * len(pending)
    before = len(model.runs)

    work = worker(store, model.loop(store), concurrency=concurrency)
    async with running(work):
        async def done() -> bool:
            return (await store.get_send(root, 0)).status == "done"
        await eventually(done, "the worker to finish the tree")

    tree = await store.session_tree(root)
    await check_tree(store, plan, tree)
    assert (await store.get_send(root, 0)).status == "done"
    tags = [r["tag"] for r in model.runs]
    assert len(tags) == len(set(tags)) and len(tags) >= before  # no leaf's tool twice
    sessions = [n.session_id for n in tree.walk()]
    assert len(sessions) == len(set(sessions)) == 4


async def test_a_parent_waits_for_the_child_a_worker_is_finishing(store: Store) -> None:
    plan: Plan = ((),)
    model = TreeModel(plan, safe=True)
    root = await model.loop(store).new_session()

    async def first(on_event: Emit) -> SendResult | None:
        return await model.loop(store, on_event=on_event).send(ROOT_TASK, root)

    at = await crash_point(store, plan, lambda e: isinstance(e, ChildEvent)
                           and isinstance(e.event, ToolCallStarted))
    assert await run_until(first, at) is None  # cut off inside the child's tool
    (child,) = (await store.session_tree(root)).children
    # The worker may take up only the child: the root is held (as by a live process).
    holder = await store.acquire_lease(root, "someone-else", ttl=60)
    model.gate = asyncio.Event()
    work = worker(store, model.loop(store), concurrency=1)
    async with running(work):
        async def worker_runs_the_child() -> bool:
            return len(model.runs) == 2
        await eventually(worker_runs_the_child, "the worker to resume the child")
        owner = (await store.get_session(child.session_id)).lease_owner
        assert owner is not None and owner.startswith(work.name)
        await store.release_lease(holder)
        # A fresh process resumes the parent: its spawn_agent re-attaches and waits for
        # the worker (the tool timeout does not apply to it), then takes the answer.
        parent = asyncio.create_task(model.loop(store, tool_timeout=0.01).resume(root))

        async def parent_claimed() -> bool:
            return (await store.get_session(root)).lease_owner not in (None, holder.owner)
        await eventually(parent_claimed, "the parent to be resumed")
        model.gate.set()
        result = await parent

    assert result is not None and result.final_text == expected(plan)
    assert [(r["attempt"], r["session_id"]) for r in model.runs] == [
        (1, child.session_id), (2, child.session_id)]
    assert work.stats.sends_resumed == 1
    await check_tree(store, plan, await store.session_tree(root))
