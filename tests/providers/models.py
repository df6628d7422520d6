"""One script, three models: ScriptedLLM, the OpenAI adapter and the Anthropic adapter.

A scenario scripts the model's turns in a neutral form (:class:`Say`, :class:`Calls`,
:class:`BreakOff`); each :class:`Model` plays them its own way: ScriptedLLM turns, or
replies queued on a fake server that the real adapter then streams through its SDK.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from power_loop import LLMRequest, ScriptedLLM, Turn, call_tools, fail, reply
from power_loop.errors import LLMStreamInterruptedError
from power_loop.llm.service import LLMService
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import Services
from tests.providers.wire import Responder, cut

MODELS = ("scripted", "openai", "anthropic")


@dataclass(frozen=True)
class Say:
    """The model answers ``text``."""

    text: str


@dataclass(frozen=True)
class Calls:
    """The model calls tools (in parallel when several)."""

    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str = ""


@dataclass(frozen=True)
class BreakOff:
    """The model starts answering ``text``, then the stream breaks (after output)."""

    text: str


Step = Say | Calls | BreakOff


class Model:
    """A model a loop can use, scripted with neutral steps."""

    name: str
    llm: LLMService

    def script(self, *steps: Step) -> None:
        raise NotImplementedError

    @property
    def calls_made(self) -> int:
        """Model calls (HTTP requests for the adapters) made so far."""
        raise NotImplementedError

    def last_request(self) -> str:
        """What the last call sent, as JSON text."""
        raise NotImplementedError


class Scripted(Model):
    name = "scripted"

    def __init__(self) -> None:
        self._turns: deque[Turn] = deque()
        self.scripted = ScriptedLLM(lambda request: self._turns.popleft(), chunk_size=5)
        self.llm = self.scripted

    def script(self, *steps: Step) -> None:
        for step in steps:
            if isinstance(step, Say):
                self._turns.append(reply(step.text))
            elif isinstance(step, Calls):
                self._turns.append(call_tools(*step.calls, text=step.text))
            else:
                broken = LLMStreamInterruptedError("scripted: the answer broke off",
                                                   provider="scripted")
                self._turns.append(fail(broken, after_chunks=1, text=step.text))

    @property
    def calls_made(self) -> int:
        return len(self.scripted.requests)

    def last_request(self) -> str:
        request: LLMRequest = self.scripted.requests[-1]
        return json.dumps(request.to_json())


class OpenAI(Model):
    name = "openai"

    def __init__(self, server: FakeOpenAI, services: Services) -> None:
        self.server = server
        self.llm = services.openai(server)
        self._ids = itertools.count(1)

    def script(self, *steps: Step) -> None:
        for step in steps:
            self.server.script(self._reply(step))

    def _reply(self, step: Step) -> Responder:
        if isinstance(step, Say):
            return oa.completion(step.text)
        if isinstance(step, Calls):
            return oa.completion(step.text, [
                oa.Call(f"call_{next(self._ids)}", name, oa.arguments(args))
                for name, args in step.calls])
        return cut(oa.completion(step.text, text_pieces=4), 2)  # the role, one piece

    @property
    def calls_made(self) -> int:
        return self.server.attempts

    def last_request(self) -> str:
        return json.dumps(self.server.last.body)


class Anthropic(Model):
    name = "anthropic"

    def __init__(self, server: FakeAnthropic, services: Services) -> None:
        self.server = server
        self.llm = services.anthropic(server)
        self._ids = itertools.count(1)

    def script(self, *steps: Step) -> None:
        for step in steps:
            self.server.script(self._reply(step))

    def _reply(self, step: Step) -> Responder:
        if isinstance(step, Say):
            return an.message(step.text)
        if isinstance(step, Calls):
            return an.message(step.text, [
                an.ToolUse(f"toolu_{next(self._ids):02d}", name, an.input_json(args))
                for name, args in step.calls])
        return cut(an.message(step.text, text_pieces=4), 4)  # start, block, ping, one piece

    @property
    def calls_made(self) -> int:
        return self.server.attempts

    def last_request(self) -> str:
        return json.dumps(self.server.last.body)


def make_model(name: str, services: Services) -> Iterator[Model]:
    """The model called ``name``; its fake server (if any) runs while the generator does."""
    if name == "scripted":
        yield Scripted()
    elif name == "openai":
        with FakeOpenAI() as server:
            yield OpenAI(server, services)
    else:
        with FakeAnthropic() as server:
            yield Anthropic(server, services)
