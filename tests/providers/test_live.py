"""Real sends to a real provider, configured as the library is: from the environment.

Marked ``live``; they run only when asked for (``pytest -m live``) and
``POWER_LOOP_API_KEY`` is set, so a default run never reaches the network even on a
machine with a key in its environment. ``POWER_LOOP_PROVIDER`` and ``POWER_LOOP_MODEL``
(and optionally ``POWER_LOOP_BASE_URL``) say where to::

    POWER_LOOP_PROVIDER=openai POWER_LOOP_MODEL=gpt-4.1-mini POWER_LOOP_API_KEY=... \\
        pytest -m live tests/providers/test_live.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from power_loop import AgentLoopConfig, StatefulAgentLoop, create_llm_service_from_env
from power_loop.llm.anthropic import AnthropicService
from power_loop.llm.openai import OpenAIChatService
from power_loop.llm.retry import RetryPolicy
from tests.providers.services import close

pytestmark = pytest.mark.live

SCHEMA = {"type": "object", "properties": {"total": {"type": "integer"}},
          "required": ["total"], "additionalProperties": False}


@pytest.fixture
async def live_loop(request: pytest.FixtureRequest,
                    tmp_path: Path) -> AsyncIterator[StatefulAgentLoop]:
    chosen = str(request.config.getoption("markexpr") or "")
    if "live" not in chosen or "not live" in chosen:
        pytest.skip("live tests run only when selected: pytest -m live")
    if not os.environ.get("POWER_LOOP_API_KEY"):
        pytest.skip("POWER_LOOP_API_KEY is not set: no live provider to talk to")
    service = create_llm_service_from_env(retry=RetryPolicy(max_attempts=3), timeout=60)
    assert isinstance(service, (OpenAIChatService, AnthropicService))
    loop = StatefulAgentLoop(llm=service, dsn=str(tmp_path / "live.db"),
                             config=AgentLoopConfig(max_output_tokens=200))
    try:
        yield loop
    finally:
        await loop.aclose()
        await close(service)


async def test_live_send(live_loop: StatefulAgentLoop) -> None:
    sid = await live_loop.new_session(system_prompt="Answer in one word.")
    result = await live_loop.send("Reply with the word pong.", session_id=sid)
    assert result.status == "done" and "pong" in result.final_text.lower()
    assert result.usage.input_tokens + result.usage.cache_read_tokens > 0
    assert result.usage.output_tokens > 0


async def test_live_structured_output(live_loop: StatefulAgentLoop) -> None:
    sid = await live_loop.new_session()
    result = await live_loop.send("What is 2 + 3? Answer as JSON.", session_id=sid,
                                  output_schema=SCHEMA)
    assert result.output == {"total": 5}
