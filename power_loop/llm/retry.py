"""Retries owned by power_loop: jittered exponential backoff that honours Retry-After.

The provider SDKs' own retries are switched off, so attempts never multiply: one
:class:`RetryPolicy` decides, in one place, what is tried again and when. A stream that
already produced output is never retried (see ``LLMStreamInterruptedError``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from power_loop.errors import InvalidArgumentError, LLMError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed model calls are retried.

    Attributes:
        max_attempts: Calls in all, the first included (1: never retry).
        base_delay: Seconds before the first retry; doubled for each one after.
        max_delay: Cap on one wait, and on a Retry-After the provider asks for.
        jitter: Share of each wait drawn at random (0: none, 1: anywhere from 0 to it),
            so a fleet of clients does not retry in step.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or not (
                0 <= self.jitter <= 1):
            raise InvalidArgumentError(
                "RetryPolicy needs max_attempts >= 1, delays >= 0 and 0 <= jitter <= 1")

    def should_retry(self, error: LLMError, attempt: int) -> bool:
        """Whether to try again after ``attempt`` (1-based) failed with ``error``."""
        return error.retryable and attempt < self.max_attempts

    def delay(self, error: LLMError, attempt: int) -> float:
        """Seconds to wait after ``attempt`` failed: Retry-After if given, else backoff."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        return backoff * (1 - self.jitter * random.random())


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries."""
