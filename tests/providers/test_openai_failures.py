"""``OpenAIChatService`` failing the ways the API fails: typed errors, retries, key hygiene.

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
from tests.providers import fake_openai as oa
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.services import SHORT_TIMEOUT, Services, fails, leaked, run
from tests.providers.wire import Reply, Responder, cut, slow, stall, then_error

NOT_RETRIED: list[tuple[Reply, type[LLMError], str]] = [
    (oa.unauthorized("sk-test-123"), LLMAuthenticationError, "llm_authentication"),
    (oa.context_length_exceeded(), LLMContextOverflowError, "llm_context_overflow"),
    (oa.error(400, "Invalid value for 'temperature'.", type="invalid_request_error",
              param="temperature"), LLMBadRequestError, "llm_bad_request"),
    (oa.error(404, "The model `gpt-test` does not exist or you do not have access to it.",
              type="invalid_request_error", code="model_not_found"),
     LLMBadRequestError, "llm_bad_request"),
    (oa.insufficient_quota(), LLMQuotaError, "llm_quota_exceeded"),
]


@pytest.mark.parametrize(("reply", "kind", "code"), NOT_RETRIED)
async def test_permanent_errors_are_typed_and_not_retried(
        services: Services, openai_server: FakeOpenAI, reply: Reply, kind: type[LLMError],
        code: str) -> None:
    openai_server.script(reply, oa.completion("never reached"))
    error = await fails(services.openai(openai_server))
    assert type(error) is kind and error.code == code
    assert error.provider == "openai" and error.status_code == reply.status
    assert error.request_id == reply.headers["x-request-id"]
    assert not error.retryable and openai_server.attempts == 1


RETRIED: list[tuple[Reply, type[LLMError], str]] = [
    (oa.rate_limited("0"), LLMRateLimitError, "llm_rate_limited"),
    (oa.server_error(500), LLMUnavailableError, "llm_unavailable"),
    (oa.server_error(503), LLMUnavailableError, "llm_unavailable"),
]


@pytest.mark.parametrize(("reply", "kind", "code"), RETRIED)
async def test_transient_errors_are_retried_up_to_max_attempts(
        services: Services, openai_server: FakeOpenAI, reply: Reply, kind: type[LLMError],
        code: str) -> None:
    openai_server.script(*[reply] * 4, oa.completion("never reached"))
    error = await fails(services.openai(openai_server))
    assert type(error) is kind and error.code == code and error.retryable
    assert openai_server.attempts == 4 and openai_server.remaining == 1


async def test_three_503s_then_success_is_four_requests(services: Services,
                                                        openai_server: FakeOpenAI) -> None:
    openai_server.script(*[oa.server_error(503)] * 3, oa.completion("finally"))
    outcome = await run(services.openai(openai_server))
    assert outcome.response.message.text == "finally" and outcome.text == "finally"
    assert openai_server.attempts == 4
    assert len({str(r.body) for r in openai_server.requests}) == 1  # the same request


async def test_retry_after_zero_beats_a_long_backoff(services: Services,
                                                     openai_server: FakeOpenAI) -> None:
    patient = RetryPolicy(max_attempts=2, base_delay=60, max_delay=60, jitter=0)
    openai_server.script(oa.rate_limited("0"), oa.completion("ok"))
    outcome = await asyncio.wait_for(run(services.openai(openai_server, retry=patient)), 20)
    assert outcome.response.message.text == "ok" and openai_server.attempts == 2


async def test_retry_after_holds_back_the_next_attempt(services: Services,
                                                       openai_server: FakeOpenAI) -> None:
    eager = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=600, jitter=0)
    openai_server.script(oa.rate_limited("300"), oa.completion("ok"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(services.openai(openai_server, retry=eager)), 1.0)
    assert openai_server.attempts == 1  # still waiting out the server's 300 s


async def test_spending_limit_429_is_not_retried(services: Services,
                                                 openai_server: FakeOpenAI) -> None:
    openai_server.script(oa.insufficient_quota(), oa.completion("never reached"))
    error = await fails(services.openai(openai_server))
    assert isinstance(error, LLMQuotaError) and not isinstance(error, LLMRateLimitError)
    assert openai_server.attempts == 1


async def test_stream_cut_after_output_is_interrupted_not_retried(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(cut(oa.completion("Hello there, world"), 3), oa.completion("again"))
    outcome = await run(services.openai(openai_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.error.code == "llm_stream_interrupted" and not outcome.error.retryable
    assert outcome.text == "Hello there,"
    assert openai_server.attempts == 1


@pytest.mark.parametrize("broken", [
    pytest.param(cut(oa.completion("Hello"), 1), id="cut-after-the-role-chunk"),
    pytest.param(then_error(oa.completion("Hello"), 1, oa.stream_error()), id="error-frame"),
])
async def test_stream_failing_before_output_is_retried(
        services: Services, openai_server: FakeOpenAI, broken: Responder) -> None:
    openai_server.script(broken, oa.completion("second try"))
    outcome = await run(services.openai(openai_server))
    assert outcome.text == "second try" and outcome.response.message.text == "second try"
    assert openai_server.attempts == 2


async def test_error_frame_after_output_is_interrupted(services: Services,
                                                       openai_server: FakeOpenAI) -> None:
    openai_server.script(then_error(oa.completion("Hello there"), 2, oa.stream_error()),
                         oa.completion("never reached"))
    outcome = await run(services.openai(openai_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.text == "Hell" and openai_server.attempts == 1


async def test_stream_ending_without_finish_after_output_is_interrupted(
        services: Services, openai_server: FakeOpenAI) -> None:
    # A proxy that ends the body cleanly in the middle of the answer (no [DONE]).
    openai_server.script(lambda r: _truncated(oa.completion("Hello there, world")(r), 3))
    outcome = await run(services.openai(openai_server))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert openai_server.attempts == 1


def _truncated(reply: Reply, frames: int) -> Reply:
    return Reply(reply.status, reply.headers, events=reply.events[:frames])


async def test_slow_server_is_a_timeout_after_every_attempt(services: Services,
                                                            openai_server: FakeOpenAI) -> None:
    openai_server.script(*[slow(oa.completion("late"))] * 2)
    service = services.openai(openai_server, timeout=SHORT_TIMEOUT,
                              retry=RetryPolicy(max_attempts=2, base_delay=0.001))
    error = await fails(service)
    assert isinstance(error, LLMTimeoutError) and error.code == "llm_timeout"
    assert openai_server.attempts == 2


async def test_stall_after_output_is_interrupted_not_retried(
        services: Services, openai_server: FakeOpenAI) -> None:
    openai_server.script(stall(oa.completion("Hello there, world"), 2), oa.completion("x"))
    outcome = await run(services.openai(openai_server, timeout=SHORT_TIMEOUT))
    assert isinstance(outcome.error, LLMStreamInterruptedError)
    assert outcome.text == "Hello " and openai_server.attempts == 1


async def test_the_key_never_shows(services: Services, openai_server: FakeOpenAI) -> None:
    key = openai_server.api_key
    echoing = oa.error(401, f"Invalid API key: {key}", type="invalid_request_error",
                       code="invalid_api_key")  # some compatible servers echo it whole
    openai_server.script(echoing, oa.server_error(500), cut(oa.completion("Hi there"), 2))
    service = services.openai(openai_server, retry=RetryPolicy(max_attempts=1))
    errors = [await fails(service) for _ in range(3)]
    causes = [e.__cause__ for e in errors]
    assert leaked(key, service, *errors, *[e.details for e in errors]) == []
    assert [type(e) for e in errors] == [LLMAuthenticationError, LLMUnavailableError,
                                         LLMStreamInterruptedError]
    # Chained (`raise ... from exc`), except where the SDK's exception would print the
    # key: the echoing error drops its cause rather than leak it into tracebacks.
    assert causes[0] is None and all(c is not None for c in causes[1:])


async def test_the_key_never_shows_in_a_logged_traceback(services: Services,
                                                         openai_server: FakeOpenAI) -> None:
    key = openai_server.api_key
    openai_server.script(oa.error(401, f"Invalid API key: {key}", type="invalid_request_error",
                                  code="invalid_api_key"))
    error = await fails(services.openai(openai_server))
    logged = "".join(traceback.format_exception(error))
    assert key not in logged
