"""Per-namespace rate limits at the frontend: one token bucket per namespace.

A bucket holds up to ``burst`` tokens and refills at ``rps`` tokens per
second; each request takes one. An empty bucket answers
``429 rate_limited`` with ``Retry-After`` (seconds until the next token), so
a client that waits that long gets through: the limit recovers by itself.

::

    limiter = NamespaceRateLimiter(registry.rate_limit)
    limiter.check("payments")      # raises RateLimitedError when over the limit
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from orchestrator.errors import RateLimitedError


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was free, else the seconds until one will be."""
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class NamespaceRateLimiter:
    """Token buckets per namespace, sized by ``limit_of(namespace) -> (rps, burst)``.

    A namespace without a rate (``None`` or 0) is not limited. A bucket is
    rebuilt when the namespace's settings change.
    """

    def __init__(
        self,
        limit_of: Callable[[str], tuple[float | None, int | None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit_of = limit_of
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, namespace: str) -> None:
        """Count one request of ``namespace``; raise :class:`RateLimitedError` when over its limit."""
        rps, burst = self._limit_of(namespace)
        if not rps:
            self._buckets.pop(namespace, None)
            return
        size = burst or max(1, math.ceil(rps))
        now = self._clock()
        bucket = self._buckets.get(namespace)
        if bucket is None or bucket.rate != rps or bucket.burst != size:
            bucket = self._buckets[namespace] = TokenBucket(rps, size, now)
        wait = bucket.take(now)
        if wait > 0:
            raise RateLimitedError(
                f"namespace {namespace!r} is over its rate limit of {rps:g} requests/s (burst {size})",
                retry_after=wait,
            )
