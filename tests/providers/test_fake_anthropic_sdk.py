"""The fake Anthropic server is faithful: the raw ``anthropic`` SDK parses all it sends.

These tests use the SDK alone (no power_loop), with its retries off; the SDK's own
stream accumulator (``messages.stream(...).get_final_message()``) rebuilding the whole
message from the fake's events is the strongest check of the event format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest

from tests.providers import fake_anthropic as an
from tests.providers.fake_anthropic import FakeAnthropic, ToolUse
from tests.providers.wire import Reply, cut, slow, stall, then_error

USER: Any = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def client(anthropic_server: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key=anthropic_server.api_key,
                                   base_url=anthropic_server.base_url, max_retries=0,
                                   timeout=0.5)
    yield sdk
    await sdk.close()


async def events(client: anthropic.AsyncAnthropic, **extra: Any) -> list[Any]:
    stream = await client.messages.create(model="claude-test", max_tokens=256, stream=True,
                                          messages=extra.pop("messages", USER), **extra)
    return [event async for event in stream]


async def test_text_stream_events(anthropic_server: FakeAnthropic,
                                  client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(an.message("Hello there, world", input_tokens=12, output_tokens=9,
                                       cache_read=300, cache_write=40))
    got = await events(client)
    kinds = [e.type for e in got]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in kinds  # the SDK drops pings itself
    start = got[0].message.usage
    assert (start.input_tokens, start.cache_read_input_tokens,
            start.cache_creation_input_tokens) == (12, 300, 40)
    text = "".join(e.delta.text for e in got if e.type == "content_block_delta")
    assert text == "Hello there, world"
    assert got[-2].delta.stop_reason == "end_turn" and got[-2].usage.output_tokens == 9


async def test_tool_uses_rebuild_in_the_sdk_accumulator(
        anthropic_server: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    uses = [ToolUse("toolu_01", "get_weather", an.input_json({"city": "Paris", "n": [1, 2]})),
            ToolUse("toolu_02", "get_time", an.input_json({"tz": "UTC"}))]
    anthropic_server.script(an.message("Let me check.", uses, json_pieces=5, cache_read=7))
    async with client.messages.stream(model="claude-test", max_tokens=256,
                                      messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check."  # type: ignore[union-attr]
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [  # type: ignore[union-attr]
        ("toolu_01", "get_weather", {"city": "Paris", "n": [1, 2]}),
        ("toolu_02", "get_time", {"tz": "UTC"})]
    assert final.usage.output_tokens == 30 and final.usage.cache_read_input_tokens == 7


@pytest.mark.parametrize("stop", ["max_tokens", "refusal", "end_turn"])
async def test_stop_reasons(anthropic_server: FakeAnthropic, client: anthropic.AsyncAnthropic,
                            stop: str) -> None:
    anthropic_server.script(an.message("Partial answ", stop_reason=stop))
    async with client.messages.stream(model="claude-test", max_tokens=256,
                                      messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == stop


async def test_request_is_recorded(anthropic_server: FakeAnthropic,
                                   client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(an.message("ok"))
    system: Any = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    await events(client, system=system)
    request = anthropic_server.last
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert an.sent_key(request) == "sk-ant-test"
    assert request.header("anthropic-version")
    assert request.body["system"] == system and request.body["max_tokens"] == 256


ERRORS: list[tuple[Reply, type[anthropic.APIStatusError], str]] = [
    (an.unauthorized(), anthropic.AuthenticationError, "authentication_error"),
    (an.prompt_too_long(), anthropic.BadRequestError, "invalid_request_error"),
    (an.rate_limited("2"), anthropic.RateLimitError, "rate_limit_error"),
    (an.spend_limit(), anthropic.RateLimitError, "rate_limit_error"),
    (an.server_error(500), anthropic.InternalServerError, "api_error"),
    (an.server_error(503), anthropic.InternalServerError, "api_error"),
    (an.overloaded(), anthropic.OverloadedError, "overloaded_error"),
]


@pytest.mark.parametrize(("reply", "kind", "error_type"), ERRORS)
async def test_error_statuses_parse_as_the_sdk_errors(
        anthropic_server: FakeAnthropic, client: anthropic.AsyncAnthropic, reply: Reply,
        kind: type[anthropic.APIStatusError], error_type: str) -> None:
    anthropic_server.script(reply)
    with pytest.raises(kind) as caught:
        await events(client)
    assert caught.value.status_code == reply.status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == error_type
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    assert anthropic_server.attempts == 1


async def test_spend_limit_is_its_own_sdk_class(anthropic_server: FakeAnthropic,
                                                client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(an.spend_limit())
    with pytest.raises(anthropic.RateLimitError) as caught:
        await events(client)
    assert type(caught.value).__name__ == "EnforcedSpendLimitReachedError"


async def test_unanswered_tool_use_is_a_400(anthropic_server: FakeAnthropic,
                                            client: anthropic.AsyncAnthropic) -> None:
    messages: Any = [*USER, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}]},
        {"role": "user", "content": "and?"}]
    with pytest.raises(anthropic.BadRequestError, match="toolu_9"):
        await events(client, messages=messages)


async def test_error_event_mid_stream(anthropic_server: FakeAnthropic,
                                      client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(then_error(an.message("Hello there, world"), 4, an.stream_error()))
    seen: list[Any] = []
    stream = await client.messages.create(model="claude-test", max_tokens=256, stream=True,
                                          messages=USER)  # opened: the error is mid-stream
    with pytest.raises(anthropic.APIStatusError) as caught:
        async for event in stream:
            seen.append(event)
    assert caught.value.status_code == 200  # the stream's own status: it had begun
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert [e.type for e in seen] == ["message_start", "content_block_start",
                                      "content_block_delta"]


async def test_cut_stream_raises_a_transport_error_after_output(
        anthropic_server: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(cut(an.message("Hello there, world"), 4))
    seen: list[Any] = []
    stream = await client.messages.create(model="claude-test", max_tokens=256, stream=True,
                                          messages=USER)  # opened: the cut is mid-stream
    with pytest.raises((httpx2.TransportError, anthropic.APIConnectionError)):
        async for event in stream:
            seen.append(event)
    assert [e.type for e in seen][-1] == "content_block_delta"


async def test_slow_server_times_out(anthropic_server: FakeAnthropic,
                                     client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(slow(an.message("late")))
    with pytest.raises(anthropic.APITimeoutError):
        await events(client)


async def test_stalled_stream_times_out_mid_answer(anthropic_server: FakeAnthropic,
                                                   client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(stall(an.message("Hello there, world"), 4))
    with pytest.raises((httpx2.TimeoutException, anthropic.APITimeoutError)):
        await events(client)


async def test_context_limit_error(anthropic_server: FakeAnthropic,
                                   client: anthropic.AsyncAnthropic) -> None:
    anthropic_server.script(an.context_limit())
    with pytest.raises(anthropic.BadRequestError, match="exceed context limit"):
        await events(client)
