"""Prompt caching through the loop: where Anthropic breakpoints land, what usage reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from power_loop import StatefulAgentLoop, Store, Usage, open_store, tool
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic, ToolUse
from tests.providers.fake_openai import Call, FakeOpenAI
from tests.providers.services import Services


@tool
def add(a: int, b: int) -> str:
    """Add two integers."""
    return f"sum={a + b}"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "cache.db"))
    yield store
    await store.aclose()


def marked(body: dict[str, Any]) -> list[tuple[int, int]]:
    return [(i, j) for i, turn in enumerate(body["messages"])
            for j, block in enumerate(turn["content"]) if "cache_control" in block]


async def test_anthropic_breakpoints_follow_the_sends(
        services: Services, anthropic_server: FakeAnthropic, sqlite_store: Store) -> None:
    anthropic_server.script(
        an.message(tool_uses=[ToolUse("toolu_01", "add", an.input_json({"a": 2, "b": 3}))],
                   input_tokens=20, cache_read=100, cache_write=10, output_tokens=5),
        an.message("5.", input_tokens=30, cache_read=110, output_tokens=2),
        an.message("Bye.", input_tokens=8, cache_read=150, cache_write=20, output_tokens=1))
    loop = StatefulAgentLoop(llm=services.anthropic(anthropic_server), store=sqlite_store,
                             tools=[add])
    sid = await loop.new_session(system_prompt="You add.")
    first = await loop.send("2+3?", session_id=sid)
    second = await loop.send("Thanks.", session_id=sid)

    bodies = anthropic_server.bodies()
    assert all(b["system"][0].get("cache_control") for b in bodies)
    # send 1, round 1: [user]; round 2: [user, assistant(tool_use), user(tool_result)]
    assert marked(bodies[0]) == [(0, 0)] and marked(bodies[1]) == [(2, 0)]
    # send 2: the previous send's last message, and the new one
    assert [t["role"] for t in bodies[2]["messages"]] == ["user", "assistant", "user",
                                                          "assistant", "user"]
    assert marked(bodies[2]) == [(3, 0), (4, 0)]
    assert first.usage == Usage(input_tokens=50, output_tokens=7, cache_read_tokens=210,
                                cache_write_tokens=10)
    assert second.usage == Usage(input_tokens=8, output_tokens=1, cache_read_tokens=150,
                                 cache_write_tokens=20)


async def test_openai_cached_tokens_reach_the_send_result(
        services: Services, openai_server: FakeOpenAI, sqlite_store: Store) -> None:
    openai_server.script(
        oa.completion(calls=[Call("call_1", "add", oa.arguments({"a": 2, "b": 3}))],
                      prompt_tokens=1200, cached_tokens=1024, completion_tokens=9),
        oa.completion("5.", prompt_tokens=1300, cached_tokens=1152, completion_tokens=2))
    loop = StatefulAgentLoop(llm=services.openai(openai_server), store=sqlite_store,
                             tools=[add])
    sid = await loop.new_session()
    result = await loop.send("2+3?", session_id=sid)
    assert result.usage == Usage(input_tokens=176 + 148, output_tokens=11,
                                 cache_read_tokens=1024 + 1152)
    [stored] = await sqlite_store.list_sends(sid)
    assert Usage.from_json(stored.usage) == result.usage
