"""OpenAI-compatible Chat Completions through the official ``openai`` SDK.

Works with OpenAI and with any server speaking the same API (vLLM, Ollama, DeepSeek,
LiteLLM...): give it their ``base_url``. Always streams (with ``include_usage``), with
the SDK's own retries off: :class:`~power_loop.llm.retry.RetryPolicy` retries instead.

Usage mapping: ``input_tokens`` is ``prompt_tokens`` minus the cached ones, which are
``cache_read_tokens`` (OpenAI caches long prompts by itself and reports only reads).
"""

from __future__ import annotations

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

_STOP = {"stop": StopReason.END_TURN, "tool_calls": StopReason.TOOL_USE,
         "function_call": StopReason.TOOL_USE, "length": StopReason.MAX_TOKENS,
         "content_filter": StopReason.REFUSAL}


class OpenAIChatService(ProviderService):
    """An :class:`~power_loop.llm.service.LLMService` over Chat Completions.

    Args:
        model: The model name (``gpt-4.1``, ``deepseek-chat``, ``llama3.1``...).
        api_key: The key (falls back to ``OPENAI_API_KEY``). Never logged or stored.
        base_url: An OpenAI-compatible endpoint; ``None`` for OpenAI itself.
        timeout: Seconds for one request (connect and each read).
        retry: How failed calls are retried.
        max_tokens_param: Which request field carries the output cap; defaults to
            ``max_completion_tokens`` for OpenAI and ``max_tokens`` elsewhere.
        strict_schema: Ask for strict structured output (the schema must then follow
            OpenAI's strict-mode rules). The answer is validated either way.
        stream_usage: Ask for the usage chunk (``stream_options``); turn off for a
            server that rejects it.
        default_headers: Extra headers on every request.
    """

    provider: ClassVar[str] = "openai"

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, retry: RetryPolicy | None = None,
                 max_tokens_param: Literal["max_completion_tokens", "max_tokens"] | None = None,
                 strict_schema: bool = False, stream_usage: bool = True,
                 default_headers: Mapping[str, str] | None = None) -> None:
        self._sdk = require_sdk("openai", "openai")
        self._httpx = require_sdk("httpx2", "openai")
        super().__init__(model, api_key=api_key, retry=retry)
        self._base_url = base_url
        self._max_tokens_param = max_tokens_param or (
            "max_completion_tokens" if base_url is None else "max_tokens")
        self._strict = strict_schema
        self._stream_usage = stream_usage
        self._options: dict[str, Any] = {
            "api_key": api_key, "base_url": base_url, "timeout": timeout, "max_retries": 0,
            "default_headers": dict(default_headers or {})}
        try:
            self._make_client()  # a missing key is a configuration error now, not later
        except self._sdk.OpenAIError as exc:
            raise ConfigurationError(
                f"openai: {self.scrub(str(exc))} (pass api_key= or set POWER_LOOP_API_KEY)"
            ) from None

    def _make_client(self) -> Any:
        return self._sdk.AsyncOpenAI(**self._options)

    def __repr__(self) -> str:
        return f"OpenAIChatService(model={self._model!r}, base_url={self._base_url!r})"

    # -- request -----------------------------------------------------------------------

    def _messages(self, request: LLMRequest) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if request.system:
            out.append({"role": "system", "content": request.system})
        for message in request.messages:
            out.extend(_convert(message))
        return out

    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self._model, "messages": self._messages(request),
                                  "stream": True}
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if request.tools:
            kwargs["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": dict(t.parameters),
            }} for t in request.tools]
            kwargs["tool_choice"] = request.tool_choice
        if request.max_output_tokens:
            kwargs[self._max_tokens_param] = request.max_output_tokens
        if request.output_schema is not None:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": dict(request.output_schema), "strict": self._strict}}
        session = request.metadata.get("session_id")
        if self._base_url is None and isinstance(session, str):
            # Routes a session's requests to the same cache shard: more prefix hits.
            kwargs["prompt_cache_key"] = session[:64]
        return kwargs

    # -- response ----------------------------------------------------------------------

    async def _attempt(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        stream = await self.client().chat.completions.create(**self._kwargs(request))
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        refused = False
        usage = Usage()
        model: str | None = None
        try:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    delta = choice.delta
                    refusal = getattr(delta, "refusal", None)
                    refused = refused or bool(refusal)
                    piece = delta.content or refusal
                    if piece:
                        text.append(piece)
                        yield TextDelta(piece)
                    for call in delta.tool_calls or ():
                        slot = calls.setdefault(call.index, {"id": None, "name": None, "args": []})
                        function = call.function
                        if call.id and not slot["id"]:
                            slot["id"] = call.id
                        if function is not None and function.name and not slot["name"]:
                            slot["name"] = function.name
                        fragment = (function.arguments if function is not None else None) or ""
                        slot["args"].append(fragment)
                        yield ToolCallDelta(call.index, call.id,
                                            function.name if function else None, fragment)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        finally:
            await stream.close()
        if finish is None:
            raise LLMUnavailableError("openai: the stream ended before the answer finished",
                                      provider="openai")
        parts: list[TextPart | ToolCallPart] = [TextPart("".join(text))] if text else []
        for index in sorted(calls):
            slot = calls[index]
            parts.append(ToolCallPart(slot["id"] or f"call_{index}", slot["name"] or "",
                                      "".join(slot["args"])))
        stop = StopReason.REFUSAL if refused else _STOP.get(finish, StopReason.END_TURN)
        if stop is StopReason.END_TURN and len(parts) > (1 if text else 0):
            stop = StopReason.TOOL_USE  # some servers say "stop" after tool calls
        yield LLMResponse(Message("assistant", tuple(parts)), usage, stop, model)

    # -- errors ------------------------------------------------------------------------

    def _map_error(self, exc: BaseException) -> LLMError:
        sdk, httpx = self._sdk, self._httpx
        status: int | None = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        common: dict[str, Any] = {"provider": "openai", "status_code": status,
                                  "request_id": getattr(exc, "request_id", None)}
        text = self.scrub(str(getattr(exc, "message", None) or exc))
        message = f"openai: {text}"
        if isinstance(exc, (sdk.APITimeoutError, httpx.TimeoutException)):
            return LLMTimeoutError(f"openai: the request timed out ({text})", **common)
        if isinstance(exc, (sdk.APIConnectionError, httpx.TransportError)):
            return LLMUnavailableError(f"openai: cannot reach the API ({text})", **common)
        if not isinstance(exc, sdk.APIError):
            return LLMError(message, **common)
        code = getattr(exc, "code", None) or ""
        after = retry_after(response.headers if response is not None else None)
        if status in (401, 403):
            return LLMAuthenticationError(f"{message} (check POWER_LOOP_API_KEY)", **common)
        if code == "insufficient_quota":
            return LLMQuotaError(message, **common)
        if status == 429:
            return LLMRateLimitError(message, retry_after=after, **common)
        if status == 408:
            return LLMTimeoutError(message, retry_after=after, **common)
        if code == "context_length_exceeded" or "maximum context length" in text:
            return LLMContextOverflowError(message, **common)
        if status is None or status >= 500 or status == 409:
            # No status: an error event inside a stream (the provider failed mid-answer).
            return LLMUnavailableError(message, retry_after=after, **common)
        return LLMBadRequestError(message, **common)


def _convert(message: Message) -> list[dict[str, Any]]:
    """A neutral message as Chat Completions messages (tool results: one each)."""
    if message.role == "user":
        _only(message, TextPart)
        return [{"role": "user", "content": message.text}]
    if message.role == "assistant":
        _only(message, TextPart, ToolCallPart)
        calls = message.tool_calls
        if not message.text and not calls:
            return []  # an empty answer: nothing to send back
        converted: dict[str, Any] = {"role": "assistant", "content": message.text or None}
        if calls:
            converted["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        return [converted]
    _only(message, ToolResultPart)
    return [{"role": "tool", "tool_call_id": r.call_id, "content": r.content}
            for r in message.tool_results]


def _only(message: Message, *kinds: type) -> None:
    for part in message.parts:
        if not isinstance(part, kinds):
            raise InvalidArgumentError(
                f"a {message.role} message cannot carry a {part.kind} part for openai")


def _usage(raw: Any) -> Usage:
    details = getattr(raw, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
    return Usage(input_tokens=max(0, prompt - cached),
                 output_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
                 cache_read_tokens=cached)
