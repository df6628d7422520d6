"""Leaving a send's stream early stops the HTTP stream at once and keeps the partial answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import cast

import pytest

from power_loop import Event, StatefulAgentLoop, Store, TextChunk, open_store
from power_loop.llm.service import LLMService
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import Services
from tests.providers.wire import stall


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(str(tmp_path / "cancel.db"))
    yield store
    await store.aclose()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_leaving_the_stream_cancels_the_model_call(
        services: Services, openai_server: FakeOpenAI, anthropic_server: FakeAnthropic,
        sqlite_store: Store, provider: str) -> None:
    llm: LLMService
    if provider == "openai":  # the server sends one piece of text, then stalls for 30 s
        openai_server.script(stall(oa.completion("Hello there, world"), 2))
        llm = services.openai(openai_server)
    else:
        anthropic_server.script(stall(an.message("Hello there, world"), 4))
        llm = services.anthropic(anthropic_server)
    loop = StatefulAgentLoop(llm=llm, store=sqlite_store)
    sid = await loop.new_session()

    async def first_chunk() -> str:
        events = cast(AsyncIterator[Event], loop.stream("Hi", session_id=sid))
        async with aclosing(events) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, TextChunk):
                    return event.text
        raise AssertionError("no text streamed")

    assert await asyncio.wait_for(first_chunk(), 20) == "Hello "
    [send] = await sqlite_store.list_sends(sid)
    assert send.status == "cancelled"
    last = (await loop.history(sid))[-1].message
    assert (last.role, last.text, last.meta.get("partial")) == ("assistant", "Hello ",
                                                                "cancelled")
