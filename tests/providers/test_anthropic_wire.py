"""``AnthropicService`` through a faithful Messages API server: streams and requests."""

from __future__ import annotations

from typing import Any

import pytest

from power_loop import (
    LLMRequest,
    Message,
    StopReason,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from tests.providers import fake_anthropic as an
from tests.providers.fake_anthropic import FakeAnthropic, ToolUse
from tests.providers.services import ADD, CLOCK, Services, ask, history_with_tools, run

CACHE = {"type": "ephemeral", "ttl": "5m"}


async def test_text_streams_as_deltas_then_one_response(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message("Hello there, world", text_pieces=4, input_tokens=12,
                                       output_tokens=9, cache_read=300, cache_write=40))
    outcome = await run(services.anthropic(anthropic_server))
    assert outcome.text == "Hello there, world"
    response = outcome.response
    assert response.message == Message("assistant", (TextPart("Hello there, world"),))
    assert response.stop_reason is StopReason.END_TURN and response.model == "claude-test"
    assert response.usage == Usage(input_tokens=12, output_tokens=9, cache_read_tokens=300,
                                   cache_write_tokens=40)
    assert anthropic_server.attempts == 1


async def test_request_shape(services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message("ok"), an.message("ok"))
    service = services.anthropic(anthropic_server)
    await run(service, ask("What is 2+3?", system="Be brief.", tools=(ADD, CLOCK),
                           max_output_tokens=99))
    await run(service, ask("Hi"))
    first, second = anthropic_server.requests
    assert an.sent_key(first) == "sk-ant-test"
    body = first.body
    assert body["model"] == "claude-test" and body["stream"] is True
    assert body["max_tokens"] == 99 and second.body["max_tokens"] == 1024
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": CACHE}]
    assert [{k: v for k, v in t.items() if k != "cache_control"} for t in body["tools"]] == [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in (ADD, CLOCK)]
    assert body["tool_choice"] == {"type": "auto"}
    assert "tools" not in second.body and "tool_choice" not in second.body


async def test_tool_choice_none(services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message("ok"))
    await run(services.anthropic(anthropic_server), ask(tools=(ADD,), tool_choice="none"))
    assert anthropic_server.last.body["tool_choice"] == {"type": "none"}


async def test_history_with_tool_calls_and_results(services: Services,
                                                   anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message("8"))
    outcome = await run(services.anthropic(anthropic_server),
                        LLMRequest(messages=history_with_tools(), tools=(ADD, CLOCK)))
    assert outcome.response.message.text == "8"  # the fake found the request valid
    turns = _without_cache(anthropic_server.last.body["messages"])
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Working on it."},
        {"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 2, "b": 3}},
        {"type": "tool_use", "id": "call_2", "name": "clock", "input": {"tz": "UTC"}}]
    assert turns[2]["content"] == [  # both results in one user turn, in call order
        {"type": "tool_result", "tool_use_id": "call_1", "content": "5", "is_error": False},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "no clock here",
         "is_error": True}]


def _without_cache(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "content": [{k: v for k, v in b.items() if k != "cache_control"}
                              for b in t["content"]]} for t in turns]


def _marked(body: dict[str, Any]) -> list[tuple[int, int]]:
    return [(i, j) for i, turn in enumerate(body["messages"])
            for j, block in enumerate(turn["content"]) if "cache_control" in block]


@pytest.mark.parametrize(("cache_prefix", "marked"), [
    (0, [(4, 0)]),                  # a first send: only the last message
    (5, [(3, 0), (4, 0)]),          # the answer before this send, and the last message
    (3, [(2, 0), (4, 0)]),          # the first tool result (merged into one user turn)
    (4, [(2, 1), (4, 0)]),          # the second one
    (6, [(4, 0)]),                  # the prefix is the whole request: one breakpoint
])
async def test_cache_breakpoints(services: Services, anthropic_server: FakeAnthropic,
                                 cache_prefix: int, marked: list[tuple[int, int]]) -> None:
    anthropic_server.script(an.message("8"))
    request = LLMRequest(messages=history_with_tools(), system="You add.", tools=(ADD, CLOCK),
                         cache_prefix=cache_prefix)
    await run(services.anthropic(anthropic_server), request)
    body = anthropic_server.last.body
    assert _marked(body) == marked
    assert body["system"][0]["cache_control"] == CACHE


async def test_no_cache_breakpoints_when_disabled(services: Services,
                                                  anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message("8"))
    request = LLMRequest(messages=history_with_tools(), system="s", tools=(ADD,),
                         cache_prefix=5)
    await run(services.anthropic(anthropic_server, cache=False), request)
    assert "cache_control" not in str(anthropic_server.last.body)


async def test_tool_use_split_across_events(services: Services,
                                            anthropic_server: FakeAnthropic) -> None:
    args = an.input_json({"a": 2, "b": 3})
    anthropic_server.script(an.message("Let me add.", [ToolUse("toolu_x", "add", args)],
                                       json_pieces=5))
    outcome = await run(services.anthropic(anthropic_server), ask(tools=(ADD,)))
    [(cid, name, streamed)] = outcome.call_fragments().values()
    assert (cid, name, streamed) == ("toolu_x", "add", args)
    response = outcome.response
    assert response.message.parts == (TextPart("Let me add."),
                                      ToolCallPart("toolu_x", "add", args))
    assert response.stop_reason is StopReason.TOOL_USE


async def test_parallel_tool_uses(services: Services, anthropic_server: FakeAnthropic) -> None:
    uses = [ToolUse("toolu_a", "add", an.input_json({"a": 1, "b": 2})),
            ToolUse("toolu_b", "clock", an.input_json({"tz": "Europe/Paris"})),
            ToolUse("toolu_c", "add", an.input_json({"a": 10, "b": 20}))]
    anthropic_server.script(an.message(tool_uses=uses))
    outcome = await run(services.anthropic(anthropic_server), ask(tools=(ADD, CLOCK)))
    assert outcome.response.message.parts == tuple(
        ToolCallPart(u.id, u.name, u.input_json) for u in uses)
    assert sorted(outcome.call_fragments().values()) == sorted(
        (u.id, u.name, u.input_json) for u in uses)


async def test_tool_use_without_input_is_an_empty_object(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(an.message(tool_uses=[ToolUse("toolu_n", "clock", "")]))
    outcome = await run(services.anthropic(anthropic_server), ask(tools=(CLOCK,)))
    [call] = outcome.response.message.tool_calls
    assert call.parsed_arguments() == {}


@pytest.mark.parametrize(("reason", "stop"), [("end_turn", StopReason.END_TURN),
                                              ("tool_use", StopReason.TOOL_USE),
                                              ("max_tokens", StopReason.MAX_TOKENS),
                                              ("stop_sequence", StopReason.STOP_SEQUENCE),
                                              ("refusal", StopReason.REFUSAL)])
async def test_stop_reasons(services: Services, anthropic_server: FakeAnthropic, reason: str,
                            stop: StopReason) -> None:
    uses = [ToolUse("toolu_1", "add", "{}")] if reason == "tool_use" else []
    anthropic_server.script(an.message("Some text", uses, stop_reason=reason))
    outcome = await run(services.anthropic(anthropic_server))
    assert outcome.response.stop_reason is stop


async def test_structured_output_request(services: Services,
                                         anthropic_server: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"], "additionalProperties": False}
    anthropic_server.script(an.message('{"answer": 5}'))
    outcome = await run(services.anthropic(anthropic_server), ask(output_schema=schema))
    assert outcome.response.message.text == '{"answer": 5}'
    assert anthropic_server.last.body["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}}


async def test_malformed_arguments_in_history_still_make_a_valid_request(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    calls = (ToolCallPart("call_1", "add", '{"a": 2,'), ToolCallPart("call_2", "add", "[1]"))
    history = (Message.user("add"), Message.assistant("", calls),
               *[Message.tool_result(ToolResultPart(c.id, c.name, "bad arguments", True))
                 for c in calls], Message.user("again"))
    anthropic_server.script(an.message("ok"))
    outcome = await run(services.anthropic(anthropic_server),
                        LLMRequest(messages=history, tools=(ADD,)))
    assert outcome.response.message.text == "ok"



async def test_non_ascii_text_and_arguments(services: Services,
                                            anthropic_server: FakeAnthropic) -> None:
    args = an.input_json({"city": "Zürich", "note": "naïve — 世界 🌍"})
    anthropic_server.script(an.message("Grüße aus 東京 🌸", [ToolUse("toolu_u", "add", args)],
                                       text_pieces=7, json_pieces=9))
    outcome = await run(services.anthropic(anthropic_server), ask("héllo 🌍", tools=(ADD,)))
    assert outcome.response.message.parts == (TextPart("Grüße aus 東京 🌸"),
                                              ToolCallPart("toolu_u", "add", args))
    assert anthropic_server.last.body["messages"][0]["content"][0]["text"] == "héllo 🌍"
