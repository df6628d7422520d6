"""The fake OpenAI server is faithful: the raw ``openai`` SDK parses all it sends.

These tests use the SDK alone (no power_loop), with its retries off, so each proves
the fake's wire format, or error shape, is what the SDK was built to read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.providers import fake_openai as oa
from tests.providers.fake_openai import Call, FakeOpenAI
from tests.providers.wire import Reply, cut, slow, stall, then_error

USER: Any = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def client(openai_server: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(api_key=openai_server.api_key, base_url=openai_server.base_url,
                             max_retries=0, timeout=0.5)
    yield sdk
    await sdk.close()


async def open_stream(client: openai.AsyncOpenAI, **extra: Any) -> Any:
    create: Any = client.chat.completions.create
    return await create(model="gpt-test", messages=extra.pop("messages", USER), stream=True,
                        **extra)


async def chunks(client: openai.AsyncOpenAI, usage: bool = True, **extra: Any) -> list[Any]:
    if usage:
        extra["stream_options"] = {"include_usage": True}
    return [chunk async for chunk in await open_stream(client, **extra)]


async def test_text_streams_as_chunks_then_usage(openai_server: FakeOpenAI,
                                                 client: openai.AsyncOpenAI) -> None:
    openai_server.script(oa.completion("Hello there, world", prompt_tokens=200,
                                       completion_tokens=7, cached_tokens=128))
    got = await chunks(client)
    assert all(c.object == "chat.completion.chunk" for c in got)
    assert got[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text == "Hello there, world"
    assert len([c for c in got if c.choices and c.choices[0].delta.content]) == 3
    finishing = [c.choices[0].finish_reason for c in got if c.choices]
    assert finishing[-1] == "stop" and set(finishing[:-1]) == {None}
    last = got[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (200, 7)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 128
    assert all(c.usage is None for c in got[:-1])


async def test_no_usage_chunk_unless_asked(openai_server: FakeOpenAI,
                                           client: openai.AsyncOpenAI) -> None:
    openai_server.script(oa.completion("Hi"))
    got = await chunks(client, usage=False)
    assert got and all(c.choices and c.usage is None for c in got)


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_tool_calls_accumulate_in_the_sdk_helper(
        openai_server: FakeOpenAI, client: openai.AsyncOpenAI, interleave: bool) -> None:
    calls = [Call("call_a1", "get_weather", oa.arguments({"city": "Paris", "unit": "c"})),
             Call("call_b2", "get_time", oa.arguments({"tz": "Europe/Paris"}))]
    openai_server.script(oa.completion(calls=calls, argument_pieces=4, interleave=interleave))
    tools: Any = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                  for n in ("get_weather", "get_time")]
    async with client.chat.completions.stream(model="gpt-test", messages=USER, tools=tools,
                                              stream_options={"include_usage": True}) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    got = [(c.id, c.function.name, c.function.arguments)
           for c in choice.message.tool_calls or () if c.type == "function"]
    assert got == [(c.id, c.name, c.arguments) for c in calls]
    assert final.usage is not None and final.usage.total_tokens == 150


@pytest.mark.parametrize("finish", ["length", "content_filter"])
async def test_other_finish_reasons(openai_server: FakeOpenAI, client: openai.AsyncOpenAI,
                                    finish: str) -> None:
    openai_server.script(oa.completion("cut sho", finish_reason=finish))
    got = await chunks(client)
    assert [c.choices[0].finish_reason for c in got if c.choices][-1] == finish


async def test_request_is_recorded(openai_server: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    openai_server.script(oa.completion("ok"))
    await chunks(client, max_tokens=64)
    request = openai_server.last
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.header("authorization") == "Bearer sk-test-123"
    assert request.body["messages"] == USER and request.body["max_tokens"] == 64
    assert request.body["stream_options"] == {"include_usage": True}


ERRORS: list[tuple[Reply, type[openai.APIStatusError], str | None]] = [
    (oa.unauthorized(), openai.AuthenticationError, "invalid_api_key"),
    (oa.context_length_exceeded(), openai.BadRequestError, "context_length_exceeded"),
    (oa.rate_limited("2"), openai.RateLimitError, "rate_limit_exceeded"),
    (oa.insufficient_quota(), openai.RateLimitError, "insufficient_quota"),
    (oa.server_error(500), openai.InternalServerError, None),
    (oa.server_error(503), openai.InternalServerError, None),
]


@pytest.mark.parametrize(("reply", "kind", "code"), ERRORS)
async def test_error_statuses_parse_as_the_sdk_errors(
        openai_server: FakeOpenAI, client: openai.AsyncOpenAI, reply: Reply,
        kind: type[openai.APIStatusError], code: str | None) -> None:
    openai_server.script(reply)
    with pytest.raises(kind) as caught:
        await chunks(client)
    assert caught.value.status_code == reply.status and caught.value.code == code
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    assert openai_server.attempts == 1


async def test_rate_limit_carries_retry_after(openai_server: FakeOpenAI,
                                              client: openai.AsyncOpenAI) -> None:
    openai_server.script(oa.rate_limited("0.25"))
    with pytest.raises(openai.RateLimitError) as caught:
        await chunks(client)
    assert caught.value.response.headers["retry-after"] == "0.25"


async def test_wrong_key_is_refused(openai_server: FakeOpenAI) -> None:
    sdk = openai.AsyncOpenAI(api_key="sk-wrong-key-0000", base_url=openai_server.base_url,
                             max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await chunks(sdk)
    finally:
        await sdk.close()
    assert "sk-wrong-key-0000" not in str(caught.value)
    assert openai_server.remaining == 0 and openai_server.attempts == 1


async def test_unanswered_tool_call_is_a_400(openai_server: FakeOpenAI,
                                             client: openai.AsyncOpenAI) -> None:
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "and?"}]
    with pytest.raises(openai.BadRequestError, match="call_1"):
        await chunks(client, messages=messages)


async def test_error_inside_the_stream(openai_server: FakeOpenAI,
                                       client: openai.AsyncOpenAI) -> None:
    openai_server.script(then_error(oa.completion("Hello there"), 2, oa.stream_error()))
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="server had an error"):
        async for chunk in await open_stream(client):
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Hell"


async def test_cut_stream_is_a_connection_error_after_output(
        openai_server: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    openai_server.script(cut(oa.completion("Hello there, world"), 3))
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in await open_stream(client):
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Hello there,"


async def test_slow_server_times_out(openai_server: FakeOpenAI,
                                     client: openai.AsyncOpenAI) -> None:
    openai_server.script(slow(oa.completion("late")))
    with pytest.raises(openai.APITimeoutError):
        await chunks(client)


async def test_stalled_stream_times_out_mid_answer(openai_server: FakeOpenAI,
                                                   client: openai.AsyncOpenAI) -> None:
    openai_server.script(stall(oa.completion("Hello there, world"), 2))
    with pytest.raises(openai.APITimeoutError):
        await chunks(client)


async def test_refusal_accumulates_in_the_sdk_helper(openai_server: FakeOpenAI,
                                                     client: openai.AsyncOpenAI) -> None:
    openai_server.script(oa.completion(refusal="I can't help with that."))
    async with client.chat.completions.stream(model="gpt-test", messages=USER) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.refusal == "I can't help with that." and message.content is None
    assert final.choices[0].finish_reason == "stop"
