"""Per-key request rate limiting: a token bucket per API key, refilled continuously.

Keyless session calls count against the session owner's key, so a leaked session id cannot be
used to exceed the owner's budget either.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol.errors import TooManyRequests

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    def __init__(
        self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_s
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def check(self, key_id: int) -> None:
        """Take one token for ``key_id`` or raise 429 with the seconds until one is available."""
        if not self.enabled:
            return
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated_at) * self._rate)
        bucket.updated_at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        retry_after_s = max(1, math.ceil((1.0 - bucket.tokens) / self._rate))
        raise TooManyRequests(
            f"request rate for this API key is over {self._rate:g} per second",
            headers={"Retry-After": str(retry_after_s)},
        )
