"""The providers' request rules, checked on what the real adapters would send.

Each check converts an :class:`LLMRequest` with the adapter's own conversion (OpenAI:
``OpenAIChatService._messages``; Anthropic: ``AnthropicService._kwargs``, which uses
``_turns`` and places the cache breakpoints) and raises ``AssertionError`` naming the
first rule the converted request breaks. Building the services makes no network call;
nothing is ever sent.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from power_loop import LLMRequest
from power_loop.llm.anthropic import AnthropicService
from power_loop.llm.openai import OpenAIChatService

MAX_CACHE_BREAKPOINTS = 4


@cache
def _anthropic() -> AnthropicService:
    return AnthropicService("claude-check", api_key="x", base_url="http://127.0.0.1:9")


@cache
def _openai() -> OpenAIChatService:
    return OpenAIChatService("gpt-check", api_key="x", base_url="http://127.0.0.1:9")


def openai_messages(request: LLMRequest) -> list[dict[str, Any]]:
    """The Chat Completions ``messages`` of a request."""
    return _openai()._messages(request)


def anthropic_kwargs(request: LLMRequest) -> dict[str, Any]:
    """The Messages API arguments of a request (cache breakpoints included)."""
    return _anthropic()._kwargs(request)


def check_openai(request: LLMRequest) -> None:
    """Every ``tool_calls`` entry answered by one ``tool`` message right after, and so on."""
    messages = openai_messages(request)
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message["role"]
        assert role in ("system", "user", "assistant", "tool"), f"openai: unknown role {role}"
        if role == "system":
            assert i == 0, "openai: a system message after the start"
        if role == "tool":
            raise AssertionError(f"openai: message {i} is a tool result without its call")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            assert message.get("content") or calls, f"openai: message {i} is an empty answer"
            ids = [c["id"] for c in calls]
            assert len(set(ids)) == len(ids), f"openai: message {i} repeats a call id"
            results = messages[i + 1:i + 1 + len(ids)]
            got = [str(m.get("tool_call_id")) for m in results if m["role"] == "tool"]
            assert len(got) == len(ids) and sorted(got) == sorted(ids), (
                f"openai: the calls {ids} of message {i} are answered by {got}")
            i += len(ids)
        i += 1


def _blocks_of(turn: dict[str, Any]) -> list[dict[str, Any]]:
    content = turn["content"]
    assert isinstance(content, list) and content, "anthropic: a turn without content"
    return content


def check_anthropic(request: LLMRequest) -> None:
    """Alternating turns from the user, each tool_use answered first thing next turn..."""
    kwargs = anthropic_kwargs(request)
    turns: list[dict[str, Any]] = kwargs["messages"]
    assert turns, "anthropic: no messages"
    assert turns[0]["role"] == "user", "anthropic: the first turn is not the user's"
    assert turns[-1]["role"] == "user", "anthropic: the request ends on an assistant turn"
    seen_ids: set[str] = set()
    breakpoints = 0
    for system in kwargs.get("system", []):
        breakpoints += "cache_control" in system
        assert system["text"].strip(), "anthropic: an empty system block"
    breakpoints += sum("cache_control" in tool for tool in kwargs.get("tools", []))
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        assert turn["role"] == expected, f"anthropic: turn {index} should be {expected}'s"
        blocks = _blocks_of(turn)
        breakpoints += sum("cache_control" in block for block in blocks)
        for block in blocks:
            if block["type"] == "text":
                assert block["text"].strip(), f"anthropic: an empty text block in turn {index}"
            elif block["type"] == "tool_use":
                assert turn["role"] == "assistant", f"anthropic: tool_use in user turn {index}"
                assert block["id"] not in seen_ids, f"anthropic: tool_use id {block['id']} twice"
                seen_ids.add(block["id"])
            else:
                assert block["type"] == "tool_result", f"anthropic: block {block['type']}"
                assert turn["role"] == "user", f"anthropic: tool_result in turn {index}"
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        previous = _blocks_of(turns[index - 1]) if index else []
        asked = [b["id"] for b in previous if b["type"] == "tool_use"]
        if turn["role"] == "user":
            leading = [b["tool_use_id"] for b in blocks[:len(results)]
                       if b["type"] == "tool_result"]
            assert leading == results, f"anthropic: turn {index} has text before results"
            assert sorted(results) == sorted(asked), (
                f"anthropic: turn {index} answers {results}, the calls were {asked}")
        elif uses:
            assert index + 1 < len(turns), f"anthropic: the calls {uses} are never answered"
    assert breakpoints <= MAX_CACHE_BREAKPOINTS, f"anthropic: {breakpoints} cache breakpoints"


def check_both(request: LLMRequest) -> None:
    """The request is well-formed for OpenAI and for Anthropic."""
    check_openai(request)
    check_anthropic(request)
