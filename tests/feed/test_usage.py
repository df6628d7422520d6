"""Token accounting: persisted per send, reported from any process, rolled up, priced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest

from power_loop import (
    AgentLoopConfig,
    InvalidArgumentError,
    ModelPrice,
    PriceTable,
    ScriptedLLM,
    SendResult,
    SessionNotFoundError,
    StatefulAgentLoop,
    Store,
    Usage,
    call_tool,
    reply,
    tool,
)
from power_loop.store.usage import send_usage_of

OpenMore = Callable[..., Awaitable[Store]]


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _loop(store: Store, script: list, model: str = "scripted") -> StatefulAgentLoop:
    return StatefulAgentLoop(llm=ScriptedLLM(script, model=model), store=store, tools=[add],
                             config=AgentLoopConfig())


def _sum(results: list[SendResult]) -> Usage:
    return sum((r.usage for r in results), Usage())


async def test_usage_from_another_store_is_the_sum_of_the_results(
        store: Store, open_more: OpenMore) -> None:
    loop = _loop(store, [
        call_tool("add", {"a": 1, "b": 2}, usage=Usage(100, 10, 5, 7)),
        reply("3", usage=Usage(120, 4, 50, 0)),
        reply("hello", usage=Usage(30, 2, 0, 1))])
    sid = await loop.new_session()
    results = [await loop.send("1 + 2?", sid), await loop.send("hi", sid)]
    other = _loop(await open_more(), [])  # another process's view: nothing cached
    usage = await other.usage(sid)
    assert usage.total == usage.own == _sum(results) == Usage(250, 16, 55, 8)
    assert usage.model_calls == sum(r.rounds for r in results) == 3
    assert [s.usage for s in usage.sends] == [r.usage for r in results]
    assert [s.model_calls for s in usage.sends] == [2, 1]
    assert usage.by_model == {"scripted": Usage(250, 16, 55, 8)}
    assert usage.children == () and usage.folds == Usage()


async def test_children_roll_up_into_the_parent(store: Store, open_more: OpenMore) -> None:
    parent = _loop(store, [reply("p", usage=Usage(10, 1, 0, 0))], model="big")
    child = _loop(store, [reply("c", usage=Usage(20, 2, 0, 0))], model="small")
    grandchild = _loop(store, [reply("g", usage=Usage(40, 4, 0, 0)),
                               reply("g2", usage=Usage(80, 8, 0, 0))], model="small")
    root = await parent.new_session()
    kid = await child.new_session(parent_id=root)
    grandkid = await grandchild.new_session(parent_id=kid)
    await parent.new_session(parent_id=root)  # a child that never sent anything
    done = [await parent.send("a", root), await child.send("b", kid),
            await grandchild.send("c", grandkid), await grandchild.send("d", grandkid)]
    usage = await _loop(await open_more(), []).usage(root)
    assert usage.own == Usage(10, 1, 0, 0) and usage.own_model_calls == 1
    assert usage.total == _sum(done) == Usage(150, 15, 0, 0)
    assert usage.model_calls == 4
    assert usage.by_model == {"big": Usage(10, 1, 0, 0), "small": Usage(140, 14, 0, 0)}
    (first, empty) = sorted(usage.children, key=lambda c: c.session_id != kid)
    assert first.session_id == kid and first.total == Usage(140, 14, 0, 0)
    assert first.children[0].session_id == grandkid and empty.total == Usage()
    alone = await parent.usage(root, descendants=False)
    assert alone.total == alone.own == Usage(10, 1, 0, 0) and alone.children == ()
    prices = PriceTable({"big": ModelPrice("10", "30"), "small": ModelPrice("1", "2")})
    # big: 10 * 10 + 1 * 30 = 130 per million; small: 140 * 1 + 14 * 2 = 168 per million
    assert usage.cost(prices) == Decimal("0.000298")
    assert usage.cost(prices, descendants=False) == Decimal("0.00013")


def test_a_sends_sub_agent_part_is_not_counted_twice() -> None:
    # As the sub-agent tool stores it: the total, with the children's part apart.
    stored = {"input_tokens": 50, "output_tokens": 5, "cache_read_tokens": 0,
              "cache_write_tokens": 0, "children": {"input_tokens": 30, "output_tokens": 3}}
    own = send_usage_of(0, "done", 2, stored)
    assert own.usage == Usage(20, 2, 0, 0) and own.model_calls == 2
    assert own.by_model == {"": Usage(20, 2, 0, 0)}


def test_cost_is_exact_and_names_what_has_no_price() -> None:
    price = ModelPrice(Decimal("3"), "15", cache_read="0.30", cache_write=Decimal("3.75"))
    usage = Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert price.cost(usage) == Decimal("22.05")
    assert ModelPrice(3, 15).cost(Usage(0, 0, 1_000_000, 1_000_000)) == Decimal(6)
    table = PriceTable({"m": price})
    assert table.cost({"m": Usage(1, 1, 1, 1)}) == Decimal("0.00002205")
    with pytest.raises(InvalidArgumentError, match=r"no price for \(model not recorded\), other"):
        table.cost({"m": Usage(1), "other": Usage(2), "": Usage(3)})
    assert table.cost({"other": Usage()}) == 0  # nothing spent costs nothing
    fallback = PriceTable({}, default=ModelPrice(1, 1))
    assert fallback.cost({"": Usage(1_000_000), "x": Usage(0, 1_000_000)}) == Decimal(2)


@pytest.mark.parametrize("bad", [0.1, -1, "abc", "NaN", "Infinity", True, None])
def test_prices_refuse_floats_and_nonsense(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        ModelPrice(bad, 1)  # type: ignore[arg-type]


async def test_usage_of_a_missing_session(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await _loop(store, []).usage("nobody")
