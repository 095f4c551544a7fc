"""Rate limits with time passed in: a token bucket and a failure back-off."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each action takes one, or as many as it
    weighs. Time is the wall clock, which may be set back: a step back refills nothing, and
    takes nothing either."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, now: float, amount: float = 1) -> bool:
        """Take ``amount`` tokens if they are there."""
        self.tokens = self._at(now)
        self.updated = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def give_back(self, amount: float = 1) -> None:
        """Return what the last successful ``take`` took (the action did not happen)."""
        self.tokens = min(self.burst, self.tokens + amount)

    def wait(self, now: float, amount: float = 1) -> float:
        """Seconds until ``amount`` tokens are there (0 if they are there now)."""
        tokens = self._at(now)
        return 0.0 if tokens >= amount else (amount - tokens) / self.rate

    def full_by(self, now: float) -> bool:
        """Whether the bucket has refilled completely by ``now`` (as good as a new one)."""
        return self._at(now) >= self.burst

    def _at(self, now: float) -> float:
        """The tokens there at ``now``."""
        return min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)


@dataclass(slots=True)
class Backoff:
    """Failures counted; from the ``free``-th on, each one blocks and doubles the wait."""

    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0

    def wait(self, now: float) -> float:
        """Seconds until another attempt is allowed (0 if it is allowed now)."""
        return max(0.0, self.blocked_until - now)

    def fail(self, now: float, *, free: int, base: float, cap: float) -> None:
        """Count a failure. From the ``free``-th on, each blocks further attempts: for ``base``
        seconds the first time, twice as long each time after, at most ``cap``."""
        self.failures += 1
        self.last_failure = now
        over = self.failures - free
        if over >= 0:
            # The exponent is bounded: a float overflows past 2**1023 (many concurrent
            # failures can be counted before the block is seen).
            self.blocked_until = now + min(cap, base * 2.0 ** min(over, 64))


class Allowances:
    """A token bucket per user (or address), full when first asked for."""

    __slots__ = ("_buckets", "_burst", "_rate")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def of(self, key: str, now: float) -> TokenBucket:
        """User ``key``'s bucket."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket.full(self._rate, self._burst, now)
        return bucket

    def forget_full(self, now: float) -> None:
        """Forget the buckets that have refilled by ``now``: a new one would be the same, and
        keys nobody uses any more must not pile up."""
        for key in [k for k, bucket in self._buckets.items() if bucket.full_by(now)]:
            del self._buckets[key]
