"""Anthropic's Messages API through the official ``anthropic`` SDK.

Always streams, with the SDK's own retries off (:class:`RetryPolicy` retries instead).

Prompt caching: cache breakpoints go on the stable prefix (the system prompt, which
also covers the tools before it), on the last message before the current send (the
history every send shares), and on the request's last message (so the next round of the
same send reads everything before it from the cache): three of the four allowed. Usage
reports ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` as
``cache_read_tokens`` and ``cache_write_tokens``; ``input_tokens`` is the uncached rest.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal

from power_loop.errors import (
    ConfigurationError,
    InvalidArgumentError,
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMContextOverflowError,
    LLMError,
    LLMQuotaError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from power_loop.llm.messages import Message, TextPart, ToolCallPart, ToolResultPart, Usage
from power_loop.llm.provider import ProviderService, require_sdk, retry_after
from power_loop.llm.retry import RetryPolicy
from power_loop.llm.service import (
    LLMRequest,
    LLMResponse,
    StopReason,
    StreamItem,
    TextDelta,
    ToolCallDelta,
)

_STOP = {"end_turn": StopReason.END_TURN, "tool_use": StopReason.TOOL_USE,
         "max_tokens": StopReason.MAX_TOKENS, "stop_sequence": StopReason.STOP_SEQUENCE,
         "refusal": StopReason.REFUSAL, "pause_turn": StopReason.END_TURN,
         "model_context_window_exceeded": StopReason.MAX_TOKENS}


class AnthropicService(ProviderService):
    """An :class:`~power_loop.llm.service.LLMService` over the Messages API.

    Args:
        model: The model name (``claude-sonnet-4-5``...).
        api_key: The key (falls back to ``ANTHROPIC_API_KEY``). Never logged or stored.
        base_url: Another endpoint speaking the Messages API.
        timeout: Seconds for one request.
        retry: How failed calls are retried.
        max_output_tokens: The answer cap when a request sets none (the API needs one).
        cache: Place prompt-cache breakpoints (see the module docstring).
        cache_ttl: ``5m`` or ``1h``.
        default_headers: Extra headers on every request.
    """

    provider: ClassVar[str] = "anthropic"

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, retry: RetryPolicy | None = None,
                 max_output_tokens: int = 4096, cache: bool = True,
                 cache_ttl: Literal["5m", "1h"] = "5m",
                 default_headers: Mapping[str, str] | None = None) -> None:
        self._sdk = require_sdk("anthropic", "anthropic")
        self._httpx = require_sdk("httpx2", "anthropic")
        super().__init__(model, api_key=api_key, retry=retry)
        self._base_url = base_url
        self._max_output_tokens = max_output_tokens
        self._cache: dict[str, str] | None = (
            {"type": "ephemeral", "ttl": cache_ttl} if cache else None)
        if not (api_key or os.environ.get("ANTHROPIC_API_KEY")
                or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
            raise ConfigurationError(
                "anthropic: no API key: pass api_key= or set POWER_LOOP_API_KEY "
                "(or ANTHROPIC_API_KEY)")
        self._options: dict[str, Any] = {
            "api_key": api_key, "base_url": base_url, "timeout": timeout, "max_retries": 0,
            "default_headers": dict(default_headers or {})}
        try:
            self._make_client()
        except self._sdk.AnthropicError as exc:
            raise ConfigurationError(
                f"anthropic: {self.scrub(str(exc))} (pass api_key= or set POWER_LOOP_API_KEY)"
            ) from None

    def _make_client(self) -> Any:
        return self._sdk.AsyncAnthropic(**self._options)

    def __repr__(self) -> str:
        return f"AnthropicService(model={self._model!r}, base_url={self._base_url!r})"

    # -- request -----------------------------------------------------------------------

    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        turns, ends = _turns(request.messages)
        if self._cache is not None and turns:
            points = {(len(turns) - 1, len(turns[-1]["content"]) - 1)}
            if 0 < request.cache_prefix <= len(ends):
                before_send = ends[request.cache_prefix - 1]
                if before_send is not None:
                    points.add(before_send)
            for turn, block in points:
                turns[turn]["content"][block]["cache_control"] = self._cache
        kwargs: dict[str, Any] = {
            "model": self._model, "messages": turns, "stream": True,
            "max_tokens": request.max_output_tokens or self._max_output_tokens}
        if request.system:
            system: dict[str, Any] = {"type": "text", "text": request.system}
            if self._cache is not None:
                system["cache_control"] = self._cache  # covers the tools too: they come first
            kwargs["system"] = [system]
        if request.tools:
            kwargs["tools"] = [{"name": t.name, "description": t.description,
                                "input_schema": dict(t.parameters)} for t in request.tools]
            if self._cache is not None and not request.system:
                kwargs["tools"][-1]["cache_control"] = self._cache
            kwargs["tool_choice"] = {"type": request.tool_choice}
        if request.output_schema is not None:
            kwargs["output_config"] = {"format": {"type": "json_schema",
                                                  "schema": dict(request.output_schema)}}
        return kwargs

    # -- response ----------------------------------------------------------------------

    async def _attempt(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        stream = await self.client().messages.create(**self._kwargs(request))
        blocks: dict[int, dict[str, Any]] = {}
        stop: str | None = None
        usage: dict[str, int] = {}
        model: str | None = None
        try:
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    model = event.message.model
                    usage.update(_usage_fields(event.message.usage))
                elif kind == "content_block_start":
                    block = event.content_block
                    blocks[event.index] = {"type": block.type, "text": [],
                                           "id": getattr(block, "id", None),
                                           "name": getattr(block, "name", None)}
                    if block.type == "tool_use":
                        yield ToolCallDelta(event.index, block.id, block.name, "")
                elif kind == "content_block_delta":
                    delta, slot = event.delta, blocks.get(event.index)
                    if slot is None:
                        continue
                    if delta.type == "text_delta":
                        slot["text"].append(delta.text)
                        yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta":
                        slot["text"].append(delta.partial_json)
                        yield ToolCallDelta(event.index, None, None, delta.partial_json)
                elif kind == "message_delta":
                    stop = event.delta.stop_reason or stop
                    usage.update(_usage_fields(event.usage))
        finally:
            await stream.close()
        if stop is None:
            raise LLMUnavailableError(
                "anthropic: the stream ended before the answer finished", provider="anthropic")
        parts: list[TextPart | ToolCallPart] = []
        for index in sorted(blocks):
            slot = blocks[index]
            if slot["type"] == "text" and slot["text"]:
                parts.append(TextPart("".join(slot["text"])))
            elif slot["type"] == "tool_use":
                parts.append(ToolCallPart(slot["id"], slot["name"], "".join(slot["text"]) or "{}"))
        result = Usage(input_tokens=usage.get("input_tokens", 0),
                       output_tokens=usage.get("output_tokens", 0),
                       cache_read_tokens=usage.get("cache_read_input_tokens", 0),
                       cache_write_tokens=usage.get("cache_creation_input_tokens", 0))
        yield LLMResponse(Message("assistant", tuple(parts)), result,
                          _STOP.get(stop, StopReason.END_TURN), model)

    # -- errors ------------------------------------------------------------------------

    def _map_error(self, exc: BaseException) -> LLMError:
        sdk, httpx = self._sdk, self._httpx
        status: int | None = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        common: dict[str, Any] = {"provider": "anthropic", "status_code": status,
                                  "request_id": getattr(exc, "request_id", None)}
        text = self.scrub(str(getattr(exc, "message", None) or exc))
        message = f"anthropic: {text}"
        if isinstance(exc, (sdk.APITimeoutError, httpx.TimeoutException)):
            return LLMTimeoutError(f"anthropic: the request timed out ({text})", **common)
        if isinstance(exc, (sdk.APIConnectionError, httpx.TransportError)):
            return LLMUnavailableError(f"anthropic: cannot reach the API ({text})", **common)
        if not isinstance(exc, sdk.APIStatusError):
            return LLMError(message, **common)
        kind = getattr(exc, "type", None) or _error_type(getattr(exc, "body", None))
        cause = getattr(exc, "error_code", None) or ""
        after = retry_after(response.headers if response is not None else None)
        if status in (401, 403) or kind in ("authentication_error", "permission_error"):
            return LLMAuthenticationError(f"{message} (check POWER_LOOP_API_KEY)", **common)
        if status == 402 or kind == "billing_error" or "spend_limit" in cause:
            return LLMQuotaError(message, **common)
        if status == 429 or kind == "rate_limit_error":
            return LLMRateLimitError(message, retry_after=after, **common)
        if status == 408 or kind == "timeout_error":
            return LLMTimeoutError(message, retry_after=after, **common)
        if (status is not None and status >= 500) or kind in ("overloaded_error", "api_error"):
            return LLMUnavailableError(message, retry_after=after, **common)
        if any(marker in text for marker in ("prompt is too long", "context window",
                                             "exceed context limit")):
            return LLMContextOverflowError(message, **common)
        return LLMBadRequestError(message, **common)


def _turns(messages: tuple[Message, ...]) -> tuple[list[dict[str, Any]],
                                                   list[tuple[int, int] | None]]:
    """Anthropic turns (same-role neighbours merged; tool results are user turns).

    Also returns, for each message, where its last block landed (turn, block), for
    placing cache breakpoints; ``None`` for a message that became no block.
    """
    turns: list[dict[str, Any]] = []
    ends: list[tuple[int, int] | None] = []
    for message in messages:
        role, blocks = _blocks(message)
        if not blocks:
            ends.append(ends[-1] if ends else None)
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
        ends.append((len(turns) - 1, len(turns[-1]["content"]) - 1))
    return turns, ends


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart) and message.role != "tool":
            if part.text.strip():  # the API rejects empty and whitespace-only text blocks
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCallPart) and message.role == "assistant":
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name,
                           "input": _arguments(part)})
        elif isinstance(part, ToolResultPart) and message.role == "tool":
            blocks.append({"type": "tool_result", "tool_use_id": part.call_id,
                           "content": part.content, "is_error": part.is_error})
        else:
            raise InvalidArgumentError(
                f"a {message.role} message cannot carry a {part.kind} part for anthropic")
    return ("assistant" if message.role == "assistant" else "user"), blocks


def _arguments(call: ToolCallPart) -> dict[str, Any]:
    """The call's input as the API wants it: an object, even when the model's was not."""
    try:
        value = call.parsed_arguments()
    except ValueError:
        return {"_unparsed_arguments": call.arguments}
    return value if isinstance(value, dict) else {"_arguments": value}


def _usage_fields(raw: Any) -> dict[str, int]:
    fields = ("input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens")
    return {f: int(v) for f in fields if (v := getattr(raw, f, None)) is not None}


def _error_type(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return str(error["type"])
    return None

