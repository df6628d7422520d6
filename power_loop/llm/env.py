"""``create_llm_service_from_env``: a model service configured by environment variables.

    POWER_LOOP_PROVIDER   openai | anthropic                         (required)
    POWER_LOOP_API_KEY    the provider's API key                     (required)
    POWER_LOOP_MODEL      the model name                             (required)
    POWER_LOOP_BASE_URL   an OpenAI-compatible or Anthropic endpoint (optional)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from power_loop.errors import ConfigurationError
from power_loop.llm.provider import ProviderService
from power_loop.llm.retry import RetryPolicy

PROVIDERS = ("openai", "anthropic")


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set: set it to {what}")
    return value


def create_llm_service_from_env(env: Mapping[str, str] | None = None, *,
                                retry: RetryPolicy | None = None,
                                timeout: float = 120.0) -> ProviderService:
    """Build the model service the environment describes.

    Args:
        env: Where to read the variables (default: ``os.environ``).
        retry: Retry policy for the service.
        timeout: Seconds for one request.

    Raises:
        ConfigurationError: a variable is missing or wrong; the message names it.
        MissingDriverError: the provider's SDK is not installed (names the extra).
    """
    source = os.environ if env is None else env
    provider = _required(source, "POWER_LOOP_PROVIDER", "openai or anthropic").lower()
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"POWER_LOOP_PROVIDER={provider!r} is not a provider power_loop knows; set it to "
            f"{' or '.join(PROVIDERS)}")
    api_key = _required(source, "POWER_LOOP_API_KEY", f"your {provider} API key")
    model = _required(source, "POWER_LOOP_MODEL", "the model to use (e.g. gpt-4.1 or "
                                                  "claude-sonnet-4-5)")
    base_url = source.get("POWER_LOOP_BASE_URL", "").strip() or None
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"POWER_LOOP_BASE_URL={base_url!r} is not an http(s) URL")
    if provider == "openai":
        from power_loop.llm.openai import OpenAIChatService

        return OpenAIChatService(model, api_key=api_key, base_url=base_url, retry=retry,
                                 timeout=timeout)
    from power_loop.llm.anthropic import AnthropicService

    return AnthropicService(model, api_key=api_key, base_url=base_url, retry=retry,
                            timeout=timeout)
