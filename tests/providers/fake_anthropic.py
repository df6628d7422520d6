"""A local server speaking Anthropic's Messages API (``POST /v1/messages``).

Streams exactly as the API does with ``stream: true``: named SSE events
``message_start`` (the message with empty content and the input usage, cache reads and
writes included), per content block ``content_block_start`` / ``content_block_delta``
(``text_delta``, or ``input_json_delta`` whose ``partial_json`` pieces make the tool
input) / ``content_block_stop``, ``message_delta`` (the stop reason and the final
``output_tokens``), ``message_stop``, with ``ping`` events in between. Errors come as
the API sends them: ``{"type": "error", "error": {"type", "message"}, "request_id"}``
with ``request-id`` and ``x-should-retry`` headers, and mid-stream as ``event: error``.

The server checks the key (``x-api-key``, or ``Authorization: Bearer`` as SDK 2.x
sends it) and ``anthropic-version`` and what the API itself would
reject (``max_tokens`` missing, empty text blocks, a ``tool_use`` not answered by a
``tool_result`` in the next message, a result answering nothing, a tool input that is not
an object, more than four ``cache_control`` breakpoints), with the API's 400 shape.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.providers.wire import Recorded, Reply, WireServer, json_reply, pieces, sse

MODEL = "claude-test"


@dataclass(frozen=True)
class ToolUse:
    """A tool call the fake model makes; ``input_json`` is the JSON text it streams."""

    id: str
    name: str
    input_json: str


def message(text: str = "", tool_uses: Sequence[ToolUse] = (), *,
            stop_reason: str | None = None, input_tokens: int = 50, output_tokens: int = 30,
            cache_read: int = 0, cache_write: int = 0, text_pieces: int = 3,
            json_pieces: int = 3, model: str = MODEL) -> Reply:
    """A streamed answer: a text block (when ``text``), then one block per tool use."""
    stop = stop_reason or ("tool_use" if tool_uses else "end_turn")
    frames = [sse({"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": 1,
                  "service_tier": "standard"}}}, "message_start")]
    index = 0
    if text:
        frames.append(_event("content_block_start", index=index,
                             content_block={"type": "text", "text": ""}))
        frames.append(PING)
        frames += [_event("content_block_delta", index=index,
                          delta={"type": "text_delta", "text": p})
                   for p in pieces(text, text_pieces)]
        frames.append(_event("content_block_stop", index=index))
        index += 1
    for use in tool_uses:
        frames.append(_event("content_block_start", index=index, content_block={
            "type": "tool_use", "id": use.id, "name": use.name, "input": {}}))
        frames += [_event("content_block_delta", index=index,
                          delta={"type": "input_json_delta", "partial_json": p})
                   for p in ["", *pieces(use.input_json, json_pieces)]]
        frames.append(_event("content_block_stop", index=index))
        index += 1
    frames.append(_event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                         usage={"output_tokens": output_tokens}))
    frames.append(_event("message_stop"))
    return Reply(200, _stream_headers(), events=frames)


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, kind)


PING = sse({"type": "ping"}, "ping")


def _stream_headers() -> dict[str, str]:
    return {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            "request-id": f"req_{uuid.uuid4().hex[:24]}", "anthropic-organization-id": "org-fake"}


# -- errors ------------------------------------------------------------------------------


def error(status: int, kind: str, message: str, *, headers: dict[str, str] | None = None,
          error_code: str | None = None) -> Reply:
    """An error response with the API's body shape."""
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message},
                            "request_id": request_id}
    if error_code is not None:
        body["error"]["details"] = {"error_code": error_code}
    retry = "true" if status in (408, 409, 429) or status >= 500 else "false"
    return json_reply(status, body, {"request-id": request_id, "x-should-retry": retry,
                                     **(headers or {})})


def unauthorized() -> Reply:
    return error(401, "authentication_error", "invalid x-api-key")


def prompt_too_long() -> Reply:
    return error(400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 "
                 "maximum")


def context_limit() -> Reply:
    """The other way the API says the context is full (input plus ``max_tokens``)."""
    return error(400, "invalid_request_error", "input length and `max_tokens` exceed context "
                 "limit: 199759 + 8192 > 200000, decrease input length or `max_tokens` and "
                 "try again")


def rate_limited(retry_after: str | None = "1") -> Reply:
    headers = {"anthropic-ratelimit-requests-limit": "50",
               "anthropic-ratelimit-requests-remaining": "0"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return error(429, "rate_limit_error", "This request would exceed the rate limit for your "
                 "organization of 50 requests per minute.", headers=headers)


def spend_limit() -> Reply:
    return error(429, "rate_limit_error", "Your organization has reached its monthly usage "
                 "limit for its API tier.", error_code="enforced_spend_limit_reached",
                 headers={"x-should-retry": "false"})


def server_error(status: int = 500) -> Reply:
    if status == 529:
        return overloaded()
    return error(status, "api_error", "Internal server error")


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded")


def stream_error(kind: str = "overloaded_error", text: str = "Overloaded") -> bytes:
    """The ``event: error`` frame the API sends when it fails mid-stream."""
    return sse({"type": "error", "error": {"type": kind, "message": text},
                "request_id": f"req_{uuid.uuid4().hex[:24]}"}, "error")


# -- the server --------------------------------------------------------------------------


class FakeAnthropic(WireServer):
    """The fake API; clients use ``base_url`` (the server's root) and ``api_key``."""

    def __init__(self, api_key: str = "sk-ant-test") -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return self.url

    def check(self, request: Recorded) -> Reply | None:
        if sent_key(request) != self.api_key:
            return unauthorized()
        if not request.header("anthropic-version"):
            return _bad("anthropic-version: header is required")
        if request.method != "POST" or request.path != "/v1/messages":
            return error(404, "not_found_error", f"Not found: {request.path}")
        return _invalid(request.body)


def sent_key(request: Recorded) -> str | None:
    """The key a request carried: ``x-api-key``, or a bearer token (newer SDKs send that)."""
    bearer = request.header("authorization") or ""
    return request.header("x-api-key") or (bearer.removeprefix("Bearer ") or None)


def _bad(message: str) -> Reply:
    return error(400, "invalid_request_error", message)


def _invalid(body: Any) -> Reply | None:
    """The 400 the API answers a malformed request with, or ``None``."""
    if not isinstance(body, dict):
        return _bad("request body must be a JSON object")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return _bad(f"{name}: Field required")
    if not body.get("stream"):
        return _bad("stream: this fake server only answers streamed requests")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return _bad("max_tokens: Input should be greater than or equal to 1")
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    previous_uses: set[str] = set()
    for i, m in enumerate(body["messages"]):
        if m.get("role") not in ("user", "assistant"):
            return _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        content = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not content:
            return _bad(f"messages.{i}: all messages must have non-empty content except for "
                        "the optional final assistant message")
        blocks += content
        problem = _check_blocks(i, m["role"], content, previous_uses)
        if problem:
            return _bad(problem)
        previous_uses = {b["id"] for b in content if b.get("type") == "tool_use"}
    if previous_uses:
        return _bad(f"messages: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(previous_uses))}")
    blocks += body.get("tools") or []
    marked = sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)
    if marked > 4:
        return _bad(f"A maximum of 4 blocks with cache_control may be provided. Found {marked}.")
    return None


def _check_blocks(i: int, role: str, content: list[dict[str, Any]],
                  previous_uses: set[str]) -> str | None:
    answered = {b.get("tool_use_id") for b in content if b.get("type") == "tool_result"}
    if previous_uses - answered:
        return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(previous_uses - answered))}. Each "
                "`tool_use` block must have a corresponding `tool_result` block in the next "
                "message.")
    for j, block in enumerate(content):
        kind = block.get("type")
        where = f"messages.{i}.content.{j}"
        if kind == "text" and not block.get("text"):
            return "messages: text content blocks must be non-empty"
        if kind == "tool_use" and (role != "assistant" or not isinstance(block.get("input"),
                                                                          dict)):
            return f"{where}.tool_use.input: Input should be a valid dictionary"
        if kind == "tool_result" and (role != "user"
                                      or block.get("tool_use_id") not in previous_uses):
            return (f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.")
        if kind not in ("text", "tool_use", "tool_result", "image", "document"):
            return (f"{where}.type: Input tag '{kind}' found using 'type' does not match any "
                    "of the expected tags")
    return None


def input_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
