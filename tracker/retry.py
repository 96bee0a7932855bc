"""When a failed attempt is retried, and after how long."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from tracker.lifecycle import ErrorCategory

# Fixed delay tiers, one delay queue each: a message waits in the queue of the largest tier not
# longer than its backoff, so a long delay never sits in front of a short one.
DEFAULT_TIERS: tuple[float, ...] = (1, 5, 30, 120, 600, 1800, 3600)
RETRYABLE: frozenset[ErrorCategory] = frozenset(
    {
        ErrorCategory.TRANSIENT,
        ErrorCategory.INFRASTRUCTURE,
        ErrorCategory.PARTNER_API,
        ErrorCategory.UNKNOWN,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter over fixed delay tiers.

    The n-th retry (n from 0) waits ``min(max_delay, initial_delay * multiplier**n)`` scaled by
    a random factor in ``[1 - jitter, 1]``, rounded down to a tier. Categories outside
    ``retryable`` are dead-lettered at once.
    """

    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.5
    tiers: tuple[float, ...] = DEFAULT_TIERS
    retryable: frozenset[ErrorCategory] = field(default=RETRYABLE)

    def __post_init__(self) -> None:
        if not self.tiers or any(t <= 0 for t in self.tiers):
            raise ValueError("tiers must be positive delays in seconds")
        if list(self.tiers) != sorted(set(self.tiers)):
            raise ValueError("tiers must be strictly increasing")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.initial_delay <= 0 or self.multiplier < 1:
            raise ValueError("initial_delay must be positive and multiplier at least 1")

    def should_retry(self, category: ErrorCategory, retry_count: int, max_retries: int) -> bool:
        return category in self.retryable and retry_count < max_retries

    def backoff(self, retry_count: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``retry_count`` (0 for the first), before tiering."""
        raw = min(self.max_delay, self.initial_delay * self.multiplier**retry_count)
        factor = 1 - self.jitter * (rng or random).random()
        return raw * factor

    def tier_for(self, delay: float) -> float:
        """The largest tier not longer than ``delay`` (the smallest tier if all are longer)."""
        index = bisect.bisect_right(self.tiers, delay) - 1
        return self.tiers[max(index, 0)]

    @property
    def tiers_ms(self) -> Sequence[int]:
        return [round(t * 1000) for t in self.tiers]
