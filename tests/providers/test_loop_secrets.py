"""The API key never reaches what the loop keeps or streams, even when a server echoes it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from power_loop import (
    AgentLoopConfig,
    Event,
    StatefulAgentLoop,
    Store,
    open_store,
)
from power_loop.errors import LLMAuthenticationError, LLMError, LLMStreamInterruptedError
from power_loop.llm.retry import RetryPolicy
from power_loop.llm.service import LLMService
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import Services, leaked
from tests.providers.wire import Responder, cut

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "secrets.db"))
    yield store
    await store.aclose()


def failures(provider: str, server: FakeOpenAI | FakeAnthropic) -> list[Responder]:
    key = server.api_key
    if provider == "openai":
        return [oa.error(401, f"Invalid API key: {key}", type="invalid_request_error",
                         code="invalid_api_key"),
                cut(oa.completion("Hello there, world"), 2)]
    return [an.error(401, "authentication_error", f"invalid x-api-key: {key}"),
            cut(an.message("Hello there, world"), 4)]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_model_errors_never_store_or_stream_the_key(
        services: Services, openai_server: FakeOpenAI, anthropic_server: FakeAnthropic,
        sqlite_store: Store, provider: str) -> None:
    server = openai_server if provider == "openai" else anthropic_server
    llm: LLMService = (services.openai(openai_server, retry=ONCE) if provider == "openai"
                       else services.anthropic(anthropic_server, retry=ONCE))
    server.script(*failures(provider, server))
    loop = StatefulAgentLoop(llm=llm, store=sqlite_store, config=AgentLoopConfig())
    sid = await loop.new_session()
    events: list[Event] = []
    errors: list[LLMError] = []
    recorded: list[object] = []
    for index in range(2):
        try:
            async for event in loop.stream("Hi", session_id=sid):
                events.append(event)
        except LLMError as exc:
            errors.append(exc)
        recorded.append((await sqlite_store.get_send(sid, index)).error)
        await loop.abort_pending(sid)  # before the next send
    assert [type(e) for e in errors] == [LLMAuthenticationError, LLMStreamInterruptedError]
    assert [e["code"] for e in recorded] == [  # type: ignore[index]
        "llm_authentication", "llm_stream_interrupted"]
    stored = json.dumps([recorded, [r.body for r in await sqlite_store.read_messages(sid)]])
    key = server.api_key
    assert key not in stored
    assert leaked(key, llm, loop, *errors, *events) == []
