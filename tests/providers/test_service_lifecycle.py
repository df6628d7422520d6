"""The adapters as long-lived objects: closing them, and using them from more than one loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from power_loop.llm.provider import ProviderService
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import Services


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_service_can_be_closed(services: Services, openai_server: FakeOpenAI,
                                     anthropic_server: FakeAnthropic, provider: str) -> None:
    service: ProviderService = (services.openai(openai_server) if provider == "openai"
                                else services.anthropic(anthropic_server))
    assert callable(getattr(service, "aclose", None))
    assert callable(getattr(service, "__aenter__", None))


_TWO_LOOPS = """
import asyncio, json, sys
from power_loop.llm.anthropic import AnthropicService
from power_loop.llm.openai import OpenAIChatService
from power_loop.llm.retry import RetryPolicy
from power_loop import LLMRequest, Message

provider, base_url, key = sys.argv[1:]
kind = OpenAIChatService if provider == "openai" else AnthropicService
service = kind("m", api_key=key, base_url=base_url,
               retry=RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01))

async def ask():
    try:
        items = [i async for i in service.stream(LLMRequest(messages=(Message.user("hi"),)))]
        return items[-1].message.text
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

# e.g. a CLI or a script calling asyncio.run once per command
print(json.dumps([asyncio.run(ask()), asyncio.run(ask())]))
"""


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_service_works_in_a_second_event_loop(openai_server: FakeOpenAI,
                                              anthropic_server: FakeAnthropic,
                                              provider: str) -> None:
    # In a child process: the dead loop's sockets cannot be closed, and must not be
    # reported in this one.
    server: FakeOpenAI | FakeAnthropic
    if provider == "openai":
        server = openai_server
        server.script(oa.completion("one"), oa.completion("two"))
    else:
        server = anthropic_server
        server.script(an.message("one"), an.message("two"))
    child = subprocess.run(
        [sys.executable, "-c", _TWO_LOOPS, provider, server.base_url, server.api_key],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    assert json.loads(child.stdout.splitlines()[-1]) == ["one", "two"]
    assert server.attempts == 2
