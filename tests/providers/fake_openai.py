"""A local server speaking OpenAI Chat Completions (``POST /v1/chat/completions``).

Streams exactly as the API does with ``stream: true``: ``chat.completion.chunk``
objects as ``data:`` frames, the first delta carrying the role, tool calls in
fragments keyed by ``index`` (``id``, ``type`` and ``function.name`` only in a call's
first fragment, then pieces of ``function.arguments``), a last choice chunk with the
``finish_reason``, then, when ``stream_options.include_usage`` was asked for, a chunk
with ``choices: []`` and the usage (every earlier chunk then carries ``usage: null``),
and ``data: [DONE]``. Errors come as the API sends them: ``{"error": {"message",
"type", "param", "code"}}`` with ``x-request-id`` (and ``retry-after`` on 429s).

The server checks the bearer key and what the API itself would reject (a tool call not
answered, a tool message answering nothing, a ``json_schema`` without a name), with the
API's 400 shape, so an adapter that builds a request the real API refuses fails here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.providers.wire import Recorded, Reply, WireServer, json_reply, pieces, sse

MODEL = "gpt-test"
CREATED = 1_750_000_000


@dataclass(frozen=True)
class Call:
    """A tool call the fake model makes; ``arguments`` is the JSON text it streams."""

    id: str
    name: str
    arguments: str


def completion(text: str = "", calls: Sequence[Call] = (), *, finish_reason: str | None = None,
               refusal: str = "",
               prompt_tokens: int = 120, completion_tokens: int = 30, cached_tokens: int = 0,
               text_pieces: int = 3, argument_pieces: int = 3, interleave: bool = False,
               model: str = MODEL) -> Callable[[Recorded], Reply]:
    """A streamed answer (a function of the request: usage only when it was asked for).

    ``refusal`` streams a refusal instead of text (``delta.refusal``, as the API does when
    it declines a structured-output request), with ``finish_reason`` ``stop``.
    """
    finish = finish_reason or ("tool_calls" if calls else "stop")

    def respond(request: Recorded) -> Reply:
        options = request.body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage"))
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk(choices: list[Any], usage: Any = None) -> bytes:
            data: dict[str, Any] = {"id": chunk_id, "object": "chat.completion.chunk",
                                    "created": CREATED, "model": model,
                                    "service_tier": "default",
                                    "system_fingerprint": "fp_fake0001", "choices": choices}
            if with_usage:
                data["usage"] = usage
            return sse(data)

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": d, "logprobs": None,
                           "finish_reason": finish_reason}])

        first_content = None if refusal or (calls and not text) else ""
        frames = [delta({"role": "assistant", "content": first_content, "refusal": None})]
        frames += [delta({"content": p}) for p in pieces(text, text_pieces)]
        frames += [delta({"refusal": p}) for p in pieces(refusal, text_pieces)]
        frames += [delta({"tool_calls": [f]}) for f in _call_fragments(calls, argument_pieces,
                                                                        interleave)]
        frames.append(delta({}, finish))
        if with_usage:
            frames.append(chunk([], usage(prompt_tokens, completion_tokens, cached_tokens)))
        frames.append(sse("[DONE]"))
        return Reply(200, _stream_headers(), events=frames)

    return respond


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _call_fragments(calls: Sequence[Call], n: int, interleave: bool) -> list[dict[str, Any]]:
    per_call: list[list[dict[str, Any]]] = []
    for index, call in enumerate(calls):
        first = {"index": index, "id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": ""}}
        rest = [{"index": index, "function": {"arguments": p}}
                for p in pieces(call.arguments, n)]
        per_call.append([first, *rest])
    if not interleave:
        return [f for fragments in per_call for f in fragments]
    out: list[dict[str, Any]] = []
    for step in range(max((len(f) for f in per_call), default=0)):
        out.extend(fragments[step] for fragments in per_call if step < len(fragments))
    return out


def _stream_headers() -> dict[str, str]:
    return {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            "x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "42",
            "openai-version": "2020-10-01"}


# -- errors ------------------------------------------------------------------------------


def error(status: int, message: str, *, type: str, code: str | None = None,
          param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """An error response with the API's body shape."""
    return json_reply(status, {"error": {"message": message, "type": type, "param": param,
                                         "code": code}},
                      {"x-request-id": f"req_{uuid.uuid4().hex}", **(headers or {})})


def unauthorized(key: str = "sk-wrong") -> Reply:
    masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
    return error(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.",
                 type="invalid_request_error", code="invalid_api_key")


def context_length_exceeded() -> Reply:
    return error(400, "This model's maximum context length is 128000 tokens. However, your "
                 "messages resulted in 130412 tokens. Please reduce the length of the "
                 "messages.", type="invalid_request_error", param="messages",
                 code="context_length_exceeded")


def rate_limited(retry_after: str | None = "1") -> Reply:
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "120ms"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return error(429, "Rate limit reached for gpt-test in organization org-fake on requests "
                 "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.",
                 type="requests", code="rate_limit_exceeded", headers=headers)


def insufficient_quota() -> Reply:
    return error(429, "You exceeded your current quota, please check your plan and billing "
                 "details.", type="insufficient_quota", code="insufficient_quota")


def server_error(status: int = 500) -> Reply:
    if status == 503:
        return error(503, "The server is overloaded or not ready yet.", type="server_error")
    return error(status, "The server had an error while processing your request. Sorry about "
                 "that!", type="server_error")


def stream_error() -> bytes:
    """An error object inside the stream, as the API sends when it fails mid-answer."""
    return sse({"error": {"message": "The server had an error while processing your request.",
                          "type": "server_error", "param": None, "code": None}})


# -- the server --------------------------------------------------------------------------


class FakeOpenAI(WireServer):
    """The fake API; clients use ``base_url`` (``.../v1``) and ``api_key``."""

    def __init__(self, api_key: str = "sk-test-123") -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def check(self, request: Recorded) -> Reply | None:
        if request.header("authorization") != f"Bearer {self.api_key}":
            sent = (request.header("authorization") or "").removeprefix("Bearer ")
            return unauthorized(sent or "none")
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return error(404, f"Unknown request URL: {request.method} {request.path}.",
                         type="invalid_request_error", code="unknown_url")
        return _invalid(request.body)


def _bad(message: str, param: str | None = None) -> Reply:
    return error(400, message, type="invalid_request_error", param=param)


def _invalid(body: Any) -> Reply | None:
    """The 400 the API answers a malformed request with, or ``None``."""
    if not isinstance(body, dict) or not body.get("model"):
        return _bad("you must provide a model parameter", "model")
    if not body.get("stream"):
        return _bad("this fake server only answers streamed requests", "stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad("[] is too short - 'messages'", "messages")
    waiting: list[str] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in waiting:
                return _bad("Invalid parameter: messages with role 'tool' must be a response "
                            "to a preceeding message with 'tool_calls'.", f"messages.[{i}].role")
            waiting.remove(m["tool_call_id"])
            continue
        if waiting:
            return _bad("An assistant message with 'tool_calls' must be followed by tool "
                        "messages responding to each 'tool_call_id'. The following "
                        f"tool_call_ids did not have response messages: {', '.join(waiting)}",
                        f"messages.[{i}].role")
        if role not in ("system", "developer", "user", "assistant"):
            return _bad(f"Invalid value: '{role}'.", f"messages.[{i}].role")
        if role == "assistant" and m.get("content") is None and not m.get("tool_calls"):
            return _bad("Invalid value for 'content': expected a string, got null.",
                        f"messages.[{i}].content")
        for call in m.get("tool_calls") or ():
            if not isinstance(call.get("function", {}).get("arguments"), str):
                return _bad("Invalid type for 'function.arguments': expected a string.",
                            f"messages.[{i}].tool_calls")
            waiting.append(call["id"])
    if waiting:
        return _bad("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'.", "messages")
    if "tool_choice" in body and not body.get("tools"):
        return _bad("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                    "'tools' are specified.", "tool_choice")
    fmt = body.get("response_format") or {}
    schema = fmt.get("json_schema")
    if fmt.get("type") == "json_schema" and not (isinstance(schema, dict)
                                                 and schema.get("name")):
        return _bad("Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema.name")
    return None


def arguments(call_args: dict[str, Any]) -> str:
    """Arguments as the model writes them (compact JSON)."""
    return json.dumps(call_args, separators=(",", ":"), ensure_ascii=False)
