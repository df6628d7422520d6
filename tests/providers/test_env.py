"""``create_llm_service_from_env``: errors name the variable; a good environment works."""

from __future__ import annotations

import pytest

from power_loop import AnthropicService, OpenAIChatService, create_llm_service_from_env
from power_loop.errors import ConfigurationError
from tests.providers import fake_anthropic as an
from tests.providers import fake_openai as oa
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import FAST, Services, leaked, run

KEY = "sk-env-secret-4242"
GOOD = {"POWER_LOOP_PROVIDER": "openai", "POWER_LOOP_API_KEY": KEY,
        "POWER_LOOP_MODEL": "gpt-test"}


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_a_missing_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigurationError) as caught:
        create_llm_service_from_env(env)
    assert missing in str(caught.value) and caught.value.code == "configuration"
    assert leaked(KEY, caught.value) == []


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_variable_is_missing(blank: str) -> None:
    with pytest.raises(ConfigurationError, match="POWER_LOOP_MODEL"):
        create_llm_service_from_env({**GOOD, "POWER_LOOP_MODEL": blank})


@pytest.mark.parametrize(("name", "value"), [("POWER_LOOP_PROVIDER", "gemini"),
                                             ("POWER_LOOP_BASE_URL", "127.0.0.1:8080/v1"),
                                             ("POWER_LOOP_BASE_URL", "ftp://example.test")])
def test_a_wrong_value_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_llm_service_from_env({**GOOD, name: value})
    assert name in str(caught.value) and value in str(caught.value)
    assert leaked(KEY, caught.value) == []


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*GOOD, "POWER_LOOP_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="POWER_LOOP_PROVIDER"):
        create_llm_service_from_env()


async def test_openai_from_env_talks_to_the_base_url(services: Services) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        server.script(oa.completion("from env"))
        service = create_llm_service_from_env(
            {**GOOD, "POWER_LOOP_PROVIDER": " OpenAI ", "POWER_LOOP_BASE_URL": server.base_url},
            retry=FAST)
        services.adopt(service)
        assert isinstance(service, OpenAIChatService) and service.model == "gpt-test"
        outcome = await run(service)
    assert outcome.response.message.text == "from env"
    assert server.last.header("authorization") == f"Bearer {KEY}"
    assert leaked(KEY, service) == []


async def test_anthropic_from_env_talks_to_the_base_url(services: Services) -> None:
    with FakeAnthropic(api_key=KEY) as server:
        server.script(an.message("from env"))
        service = create_llm_service_from_env(
            {"POWER_LOOP_PROVIDER": "anthropic", "POWER_LOOP_API_KEY": KEY,
             "POWER_LOOP_MODEL": "claude-test", "POWER_LOOP_BASE_URL": server.base_url},
            retry=FAST)
        services.adopt(service)
        assert isinstance(service, AnthropicService) and service.model == "claude-test"
        outcome = await run(service)
    assert outcome.response.message.text == "from env"
    assert an.sent_key(server.last) == KEY
    assert leaked(KEY, service) == []


def _without_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "ANTHROPIC_API_KEY",
                 "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_openai_without_a_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_provider_keys(monkeypatch)
    with pytest.raises(ConfigurationError, match="POWER_LOOP_API_KEY"):
        OpenAIChatService("gpt-test", base_url="http://127.0.0.1:9/v1")


async def test_anthropic_without_a_key_is_a_configuration_error(
        monkeypatch: pytest.MonkeyPatch, services: Services,
        anthropic_server: FakeAnthropic) -> None:
    _without_provider_keys(monkeypatch)
    anthropic_server.script(an.message("never reached"))
    with pytest.raises(ConfigurationError, match="POWER_LOOP_API_KEY"):
        service = AnthropicService("claude-test", base_url=anthropic_server.base_url,
                                   retry=FAST)
        services.adopt(service)
        outcome = await run(service)
        raise AssertionError(f"the send raised {outcome.error!r}")
