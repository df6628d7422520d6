"""Fixtures of the provider tests: fake servers on 127.0.0.1, the adapters, the models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.models import MODELS, Model, make_model
from tests.providers.services import Services


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    made = Services()
    yield made
    await made.aclose()


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest, services: Services) -> Iterator[Model]:
    """Each scenario runs on ScriptedLLM, the OpenAI adapter and the Anthropic adapter."""
    yield from make_model(request.param, services)
