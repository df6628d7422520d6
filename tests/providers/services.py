"""The real adapters, pointed at the fake servers, and what the wire tests read back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from power_loop import LLMRequest, LLMResponse, Message, ToolCallPart, ToolResultPart, ToolSpec
from power_loop.errors import LLMError
from power_loop.llm.anthropic import AnthropicService
from power_loop.llm.openai import OpenAIChatService
from power_loop.llm.retry import RetryPolicy
from power_loop.llm.service import LLMService, StreamItem, TextDelta, ToolCallDelta
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI

FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01)
"""Four attempts, backing off by milliseconds."""
SHORT_TIMEOUT = 0.3
"""Seconds a client waits in the slow-server tests (the fakes then wait far longer)."""

ADD = ToolSpec("add", "Add two integers.", {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"]})
CLOCK = ToolSpec("clock", "The time in a zone.", {
    "type": "object", "properties": {"tz": {"type": "string"}}})


class Services:
    """Builds the adapters against the fakes, and closes them at the end of a test."""

    def __init__(self) -> None:
        self._made: list[OpenAIChatService | AnthropicService] = []

    def openai(self, server: FakeOpenAI, *, retry: RetryPolicy = FAST, timeout: float = 5.0,
               **options: Any) -> OpenAIChatService:
        service = OpenAIChatService(model="gpt-test", api_key=server.api_key,
                                    base_url=server.base_url, timeout=timeout, retry=retry,
                                    **options)
        self._made.append(service)
        return service

    def anthropic(self, server: FakeAnthropic, *, retry: RetryPolicy = FAST,
                  timeout: float = 5.0, **options: Any) -> AnthropicService:
        service = AnthropicService(model="claude-test", api_key=server.api_key,
                                   base_url=server.base_url, timeout=timeout, retry=retry,
                                   max_output_tokens=1024, **options)
        self._made.append(service)
        return service

    def adopt(self, service: LLMService) -> None:
        """Close ``service`` (built elsewhere) with the others."""
        if isinstance(service, (OpenAIChatService, AnthropicService)):
            self._made.append(service)

    async def aclose(self) -> None:
        for service in self._made:
            await close(service)


async def close(service: OpenAIChatService | AnthropicService) -> None:
    """Release the service's HTTP connections (else every pooled keep-alive socket is
    reported unclosed: an error under ``filterwarnings = error``)."""
    await service.aclose()


def ask(text: str = "Hi", **fields: Any) -> LLMRequest:
    return LLMRequest(messages=(Message.user(text),), **fields)


@dataclass
class Outcome:
    """Everything one ``stream`` call yielded (and what it raised, if it did)."""

    items: list[StreamItem]
    error: LLMError | None = None

    @property
    def response(self) -> LLMResponse:
        assert self.error is None, f"the stream raised {self.error!r}"
        last = self.items[-1]
        assert isinstance(last, LLMResponse)
        assert not any(isinstance(i, LLMResponse) for i in self.items[:-1])
        return last

    @property
    def text(self) -> str:
        return "".join(i.text for i in self.items if isinstance(i, TextDelta))

    def call_fragments(self) -> dict[int, tuple[str | None, str | None, str]]:
        """``index -> (id, name, arguments)`` as the ToolCallDeltas spelled them."""
        out: dict[int, tuple[str | None, str | None, str]] = {}
        for item in self.items:
            if isinstance(item, ToolCallDelta):
                cid, name, args = out.get(item.index, (None, None, ""))
                out[item.index] = (cid or item.id, name or item.name, args + item.arguments)
        return out


async def run(service: LLMService, request: LLMRequest | None = None) -> Outcome:
    """Stream one answer, keeping what came before an error."""
    outcome = Outcome([])
    try:
        async for item in service.stream(request or ask()):
            outcome.items.append(item)
    except LLMError as exc:
        outcome.error = exc
    return outcome


async def fails(service: LLMService, request: LLMRequest | None = None) -> LLMError:
    """The typed error streaming one answer raises (within a generous bound)."""
    outcome = await asyncio.wait_for(run(service, request), 20)
    assert isinstance(outcome.error, LLMError), f"expected an LLMError, got {outcome.items}"
    return outcome.error


def history_with_tools() -> tuple[Message, ...]:
    """A past send with two parallel calls (one failed) and its answer, then a new ask."""
    calls = (ToolCallPart("call_1", "add", '{"a": 2, "b": 3}'),
             ToolCallPart("call_2", "clock", '{"tz": "UTC"}'))
    return (Message.user("2+3, and the time?"),
            Message.assistant("Working on it.", calls),
            Message.tool_result(ToolResultPart("call_1", "add", "5")),
            Message.tool_result(ToolResultPart("call_2", "clock", "no clock here", True)),
            Message.assistant("5; the clock failed."),
            Message.user("Thanks. And 4+4?"))


def mentions(body: Any, *needles: str) -> bool:
    text = json.dumps(body)
    return all(n in text for n in needles)


def leaked(secret: str, *things: object) -> list[str]:
    """Which of ``things`` (by ``str`` and ``repr``) contain ``secret``."""
    return [repr(t)[:120] for t in things if secret in str(t) or secret in repr(t)]


def no_calls(parts: Sequence[object]) -> bool:
    return not any(isinstance(p, ToolCallPart) for p in parts)
