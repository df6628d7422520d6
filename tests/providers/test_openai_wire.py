"""``OpenAIChatService`` through a faithful Chat Completions server: streams and requests."""

from __future__ import annotations

import pytest

from power_loop import LLMRequest, Message, StopReason, TextPart, ToolCallPart, Usage
from tests.providers import fake_openai as oa
from tests.providers.fake_openai import Call, FakeOpenAI
from tests.providers.services import (
    ADD,
    CLOCK,
    Services,
    ask,
    history_with_tools,
    run,
)


async def test_text_streams_as_deltas_then_one_response(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion("Hello there, world", text_pieces=4, prompt_tokens=200,
                                       completion_tokens=7, cached_tokens=150))
    outcome = await run(services.openai(openai_server))
    assert outcome.text == "Hello there, world"
    assert sum(1 for i in outcome.items if type(i).__name__ == "TextDelta") == 4
    response = outcome.response
    assert response.message == Message("assistant", (TextPart("Hello there, world"),))
    assert response.stop_reason is StopReason.END_TURN and response.model == "gpt-test"
    assert response.usage == Usage(input_tokens=50, output_tokens=7, cache_read_tokens=150)
    assert openai_server.attempts == 1


async def test_request_shape(services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion("ok"))
    request = ask("What is 2+3?", system="Be brief.", tools=(ADD, CLOCK), max_output_tokens=99)
    await run(services.openai(openai_server), request)
    sent = openai_server.last
    assert sent.header("authorization") == "Bearer sk-test-123"
    body = sent.body
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is 2+3?"}]
    assert body["tools"] == [{"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": dict(t.parameters)}}
        for t in (ADD, CLOCK)]
    assert body["tool_choice"] == "auto"
    assert body["max_tokens"] == 99  # a compatible server's name for the cap


async def test_final_round_sends_tool_choice_none_and_no_tools_sends_no_choice(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion("a"), oa.completion("b"))
    service = services.openai(openai_server)
    await run(service, ask(tools=(ADD,), tool_choice="none"))
    await run(service, ask())
    first, second = openai_server.bodies()
    assert first["tool_choice"] == "none"
    assert "tools" not in second and "tool_choice" not in second


async def test_history_with_tool_calls_and_results(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion("8"))
    outcome = await run(services.openai(openai_server),
                        LLMRequest(messages=history_with_tools(), tools=(ADD, CLOCK)))
    assert outcome.response.message.text == "8"  # the fake found the request valid
    assert openai_server.last.body["messages"][1:4] == [
        {"role": "assistant", "content": "Working on it.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "clock", "arguments": '{"tz": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "tool", "tool_call_id": "call_2", "content": "no clock here"}]


async def test_tool_call_split_across_chunks(services: Services, openai_server: FakeOpenAI) -> None:
    args = oa.arguments({"a": 2, "b": 3})
    openai_server.script(oa.completion("Let me add.", [Call("call_x", "add", args)],
                                       argument_pieces=5))
    outcome = await run(services.openai(openai_server), ask(tools=(ADD,)))
    assert outcome.call_fragments() == {0: ("call_x", "add", args)}
    response = outcome.response
    assert response.message.parts == (TextPart("Let me add."),
                                      ToolCallPart("call_x", "add", args))
    assert response.stop_reason is StopReason.TOOL_USE


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_tool_calls(
        services: Services, openai_server: FakeOpenAI, interleave: bool) -> None:
    calls = [Call("call_a", "add", oa.arguments({"a": 1, "b": 2})),
             Call("call_b", "clock", oa.arguments({"tz": "Europe/Paris"})),
             Call("call_c", "add", oa.arguments({"a": 10, "b": 20}))]
    openai_server.script(oa.completion(calls=calls, argument_pieces=3, interleave=interleave))
    outcome = await run(services.openai(openai_server), ask(tools=(ADD, CLOCK)))
    assert outcome.text == ""
    assert outcome.response.message.parts == tuple(
        ToolCallPart(c.id, c.name, c.arguments) for c in calls)
    assert outcome.call_fragments() == {i: (c.id, c.name, c.arguments)
                                        for i, c in enumerate(calls)}


@pytest.mark.parametrize(("finish", "stop"), [("stop", StopReason.END_TURN),
                                              ("tool_calls", StopReason.TOOL_USE),
                                              ("length", StopReason.MAX_TOKENS),
                                              ("content_filter", StopReason.REFUSAL)])
async def test_stop_reasons(
        services: Services, openai_server: FakeOpenAI, finish: str, stop: StopReason) -> None:
    calls = [Call("call_1", "add", "{}")] if finish == "tool_calls" else []
    openai_server.script(oa.completion("Some text", calls, finish_reason=finish))
    assert (await run(services.openai(openai_server))).response.stop_reason is stop


async def test_structured_output_request(services: Services, openai_server: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"], "additionalProperties": False}
    openai_server.script(oa.completion('{"answer": 5}'))
    outcome = await run(services.openai(openai_server), ask(output_schema=schema))
    assert outcome.response.message.text == '{"answer": 5}'
    response_format = openai_server.last.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == schema
    assert response_format["json_schema"]["name"]


async def test_usage_without_a_usage_chunk_is_zero(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion("hi"))
    outcome = await run(services.openai(openai_server, stream_usage=False))
    assert "stream_options" not in openai_server.last.body
    assert outcome.response.usage == Usage()


async def test_compatible_server_saying_stop_after_tool_calls(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion(calls=[Call("call_1", "add", "{}")],
                                       finish_reason="stop"))
    outcome = await run(services.openai(openai_server), ask(tools=(ADD,)))
    assert outcome.response.stop_reason is StopReason.TOOL_USE


async def test_refusal_is_reported_as_refusal(services: Services,
                                              openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.completion(refusal="I can't help with that."))
    outcome = await run(services.openai(openai_server), ask(output_schema={"type": "object"}))
    assert outcome.response.message.text == "I can't help with that."
    assert outcome.response.stop_reason is StopReason.REFUSAL


async def test_non_ascii_text_and_arguments(services: Services,
                                            openai_server: FakeOpenAI) -> None:
    args = oa.arguments({"city": "Zürich", "note": "naïve — 世界 🌍"})
    openai_server.script(oa.completion("Grüße aus 東京 🌸", [Call("call_u", "add", args)],
                                       text_pieces=7, argument_pieces=9))
    outcome = await run(services.openai(openai_server), ask("héllo 🌍", tools=(ADD,)))
    assert outcome.response.message.parts == (TextPart("Grüße aus 東京 🌸"),
                                              ToolCallPart("call_u", "add", args))
    assert openai_server.last.body["messages"][0]["content"] == "héllo 🌍"
