"""What the SDK-backed services share: retries, interruption, key hygiene.

A subclass implements :meth:`ProviderService._attempt` (one streamed call through its
SDK) and :meth:`ProviderService._map_error` (the one place that SDK's exceptions
become power_loop's). :meth:`ProviderService.stream` retries failed attempts with the
:class:`~power_loop.llm.retry.RetryPolicy`, but never once output has streamed: then it
raises :class:`~power_loop.errors.LLMStreamInterruptedError`, and the loop keeps the
partial answer and leaves the send resumable.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from power_loop.errors import LLMError, LLMStreamInterruptedError, MissingDriverError
from power_loop.llm.retry import RetryPolicy
from power_loop.llm.service import LLMRequest, StreamItem, TextDelta, ToolCallDelta

_KEYLIKE = re.compile(r"\b(sk|key|rk|pk)[-_][A-Za-z0-9_*\-]{6,}")


def require_sdk(module: str, extra: str) -> Any:
    """Import a provider SDK, or say which extra installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingDriverError(module, extra) from None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ProviderService:
    """Base of the SDK-backed :class:`~power_loop.llm.service.LLMService` s."""

    provider: ClassVar[str]

    def __init__(self, model: str, *, api_key: str | None, retry: RetryPolicy | None) -> None:
        self._model = model
        self._secret = api_key or ""
        self.retry = retry or RetryPolicy()
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def model(self) -> str:
        return self._model

    def _make_client(self) -> Any:
        """A new SDK client (its connection pool belongs to the running event loop)."""
        raise NotImplementedError

    def client(self) -> Any:
        """The SDK client for the running event loop, made on first use in each loop.

        An SDK client's connection pool is bound to the event loop it first ran in; a
        service used from another loop (a second ``asyncio.run``) gets a client of its own.
        """
        running = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not running:
            self._client, self._client_loop = self._make_client(), running
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client's connections (the service can still be used after)."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> ProviderService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _reveals_secret(self, exc: BaseException) -> bool:
        if not self._secret:
            return False
        seen = f"{exc!s} {getattr(exc, 'body', '')!r} {getattr(exc, 'args', '')!r}"
        return self._secret in seen

    def scrub(self, text: str) -> str:
        """``text`` with the API key, and anything shaped like a key, masked."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return _KEYLIKE.sub(lambda m: f"{m.group(1)}-***", text)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        attempt = 1
        while True:
            produced = False
            try:
                async for item in self._attempt(request):
                    if isinstance(item, (TextDelta, ToolCallDelta)):
                        produced = True
                    yield item
                return
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                error = exc if isinstance(exc, LLMError) else self._map_error(exc)
                # The SDK's exception is chained as the cause, unless it would print the
                # API key (a server echoing it back in an error body).
                cause = None if self._reveals_secret(exc) else exc
                if produced:
                    raise LLMStreamInterruptedError(
                        f"{self.provider}: the answer broke off after it began streaming "
                        f"({error.message}); the partial answer is kept and the send can be "
                        "resumed", provider=self.provider, status_code=error.status_code,
                        request_id=error.request_id) from cause
                if not self.retry.should_retry(error, attempt):
                    raise error from cause
                await asyncio.sleep(self.retry.delay(error, attempt))
                attempt += 1

    def _attempt(self, request: LLMRequest) -> AsyncIterator[StreamItem]:
        """One streamed call; raise the SDK's exceptions as they come."""
        raise NotImplementedError

    def _map_error(self, exc: BaseException) -> LLMError:
        """The one place this provider's exceptions become power_loop's."""
        raise NotImplementedError
