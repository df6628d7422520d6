"""``AnthropicService`` failing the ways the API fails: typed errors, retries, key hygiene.

Attempts are counted by the fake server, so SDK-level retries hiding under ours would
show up as extra requests.
"""

from __future__ import annotations

import asyncio
import traceback

import pytest

from power_loop.errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMContextOverflowError,
    LLMError,
    LLMQuotaError,
    LLMRateLimitError,
    LLMStreamInterruptedError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from power_loop.llm.retry import RetryPolicy
from tests.providers import fake_anthropic as an
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.services import SHORT_TIMEOUT, Services, fails, leaked, run
from tests.providers.wire import Reply, Responder, cut, slow, stall, then_error

NOT_RETRIED: list[tuple[Reply, type[LLMError], str]] = [
    (an.unauthorized(), LLMAuthenticationError, "llm_authentication"),
    (an.error(403, "permission_error", "Your API key does not have permission to use the "
              "specified resource."), LLMAuthenticationError, "llm_authentication"),
    (an.prompt_too_long(), LLMContextOverflowError, "llm_context_overflow"),
    (an.error(400, "invalid_request_error", "messages.0.content: Field required"),
     LLMBadRequestError, "llm_bad_request"),
    (an.error(404, "not_found_error", "model: claude-test"), LLMBadRequestError,
     "llm_bad_request"),
    (an.spend_limit(), LLMQuotaError, "llm_quota_exceeded"),
]


@pytest.mark.parametrize(("reply", "kind", "code"), [
    *NOT_RETRIED,
    pytest.param(an.context_limit(), LLMContextOverflowError, "llm_context_overflow",
                 id="context-limit"),
])
async def test_permanent_errors_are_typed_and_not_retried(
        services: Services, anthropic_server: FakeAnthropic, reply: Reply,
        kind: type[LLMError], code: str) -> None:
    anthropic_server.script(reply, an.message("never reached"))
    error = await fails(services.anthropic(anthropic_server))
    assert type(error) is kind and error.code == code
    assert error.provider == "anthropic" and error.status_code == reply.status
    assert error.request_id == reply.headers["request-id"]
    assert not error.retryable and anthropic_server.attempts == 1


RETRIED: list[tuple[Reply, type[LLMError], str]] = [
    (an.rate_limited("0"), LLMRateLimitError, "llm_rate_limited"),
    (an.server_error(500), LLMUnavailableError, "llm_unavailable"),
    (an.server_error(503), LLMUnavailableError, "llm_unavailable"),
    (an.overloaded(), LLMUnavailableError, "llm_unavailable"),
]


@pytest.mark.parametrize(("reply", "kind", "code"), RETRIED)
async def test_transient_errors_are_retried_up_to_max_attempts(
        services: Services, anthropic_server: FakeAnthropic, reply: Reply,
        kind: type[LLMError], code: str) -> None:
    anthropic_server.script(*[reply] * 4, an.message("never reached"))
    error = await fails(services.anthropic(anthropic_server))
    assert type(error) is kind and error.code == code and error.retryable
    assert anthropic_server.attempts == 4 and anthropic_server.remaining == 1


async def test_three_529s_then_success_is_four_requests(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(*[an.overloaded()] * 3, an.message("finally"))
    outcome = await run(services.anthropic(anthropic_server))
    assert outcome.response.message.text == "finally"
    assert anthropic_server.attempts == 4


async def test_retry_after_zero_beats_a_long_backoff(services: Services,
                                                     anthropic_server: FakeAnthropic) -> None:
    patient = RetryPolicy(max_attempts=2, base_delay=60, max_delay=60, jitter=0)
    anthropic_server.script(an.rate_limited("0"), an.message("ok"))
    service = services.anthropic(anthropic_server, retry=patient)
    outcome = await asyncio.wait_for(run(service), 20)
    assert outcome.response.message.text == "ok" and anthropic_server.attempts == 2


async def test_retry_after_holds_back_the_next_attempt(services: Services,
                                                       anthropic_server: FakeAnthropic) -> None:
    eager = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=600, jitter=0)
    anthropic_server.script(an.rate_limited("300"), an.message("ok"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(services.anthropic(anthropic_server, retry=eager)), 1.0)
    assert anthropic_server.attempts == 1


async def test_stream_cut_after_output_is_interrupted_not_retried(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    # message_start, content_block_start, ping, one text delta: then the socket closes
    anthropic_server.script(cut(an.message("Hello there, world"), 4), an.message("again"))
    outcome = await run(services.anthropic(anthropic_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.error.code == "llm_stream_interrupted" and not outcome.error.retryable
    assert outcome.text == "Hello " and anthropic_server.attempts == 1


async def test_overloaded_event_after_output_is_interrupted(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(then_error(an.message("Hello there, world"), 5, an.stream_error()),
                            an.message("never reached"))
    outcome = await run(services.anthropic(anthropic_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.text == "Hello there," and anthropic_server.attempts == 1


@pytest.mark.parametrize("broken", [
    pytest.param(cut(an.message("Hello"), 2), id="cut-after-block-start"),
    pytest.param(then_error(an.message("Hello"), 3, an.stream_error()), id="overloaded-event"),
    pytest.param(then_error(an.message("Hello"), 1, an.stream_error("api_error", "Internal")),
                 id="api-error-event"),
])
async def test_stream_failing_before_output_is_retried(
        services: Services, anthropic_server: FakeAnthropic, broken: Responder) -> None:
    anthropic_server.script(broken, an.message("second try"))
    outcome = await run(services.anthropic(anthropic_server))
    assert outcome.text == "second try" and outcome.response.message.text == "second try"
    assert anthropic_server.attempts == 2


async def test_stream_ending_before_message_delta_after_output_is_interrupted(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    whole = an.message("Hello there, world")
    anthropic_server.script(Reply(whole.status, whole.headers, events=whole.events[:5]))
    outcome = await run(services.anthropic(anthropic_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert anthropic_server.attempts == 1


async def test_slow_server_is_a_timeout_after_every_attempt(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(*[slow(an.message("late"))] * 2)
    service = services.anthropic(anthropic_server, timeout=SHORT_TIMEOUT,
                                 retry=RetryPolicy(max_attempts=2, base_delay=0.001))
    error = await fails(service)
    assert isinstance(error, LLMTimeoutError) and error.code == "llm_timeout"
    assert anthropic_server.attempts == 2


async def test_stall_after_output_is_interrupted_not_retried(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(stall(an.message("Hello there, world"), 4), an.message("x"))
    outcome = await run(services.anthropic(anthropic_server, timeout=SHORT_TIMEOUT))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.text == "Hello " and anthropic_server.attempts == 1


async def test_the_key_never_shows(services: Services, anthropic_server: FakeAnthropic) -> None:
    key = anthropic_server.api_key
    echoing = an.error(401, "authentication_error", f"invalid x-api-key: {key}")
    anthropic_server.script(echoing, an.overloaded(), cut(an.message("Hi there"), 4))
    service = services.anthropic(anthropic_server, retry=RetryPolicy(max_attempts=1))
    errors = [await fails(service) for _ in range(3)]
    assert leaked(key, service, *errors, *[e.details for e in errors]) == []
    assert [type(e) for e in errors] == [LLMAuthenticationError, LLMUnavailableError,
                                         LLMStreamInterruptedError]
    # Chained (`raise ... from exc`), except where the SDK's exception would print the
    # key: the echoing error drops its cause rather than leak it into tracebacks.
    assert errors[0].__cause__ is None
    assert all(e.__cause__ is not None for e in errors[1:])


async def test_the_key_never_shows_in_a_logged_traceback(
        services: Services, anthropic_server: FakeAnthropic) -> None:
    key = anthropic_server.api_key
    anthropic_server.script(an.error(401, "authentication_error", f"invalid x-api-key: {key}"))
    error = await fails(services.anthropic(anthropic_server))
    assert key not in "".join(traceback.format_exception(error))
