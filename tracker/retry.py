"""When a failed attempt is retried, and after how long."""

from __future__ import annotations

import bisect
import math
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
        if not all(math.isfinite(v) for v in (self.initial_delay, self.multiplier, self.max_delay)):
            raise ValueError("initial_delay, multiplier and max_delay must be finite")

    def should_retry(self, category: ErrorCategory, retry_count: int, max_retries: int) -> bool:
        return category in self.retryable and retry_count < max_retries

    def tier_index(self, delay: float) -> int:
        return max(bisect.bisect_right(self.tiers, delay) - 1, 0)

    def backoff(self, retry_count: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``retry_count`` (0 for the first), before tiering.
        Any count is safe: the growth stops at ``max_delay`` before it can overflow."""
        raw = self.max_delay
        if retry_count <= self._doublings_to_max:
            raw = min(self.max_delay, self.initial_delay * self.multiplier ** max(retry_count, 0))
        factor = 1 - self.jitter * (rng or random).random()
        return raw * factor

    @property
    def _doublings_to_max(self) -> float:
        """The retry count from which the backoff is ``max_delay``."""
        if self.multiplier == 1 or self.max_delay <= self.initial_delay:
            return 0 if self.max_delay <= self.initial_delay else math.inf
        return math.log(self.max_delay / self.initial_delay, self.multiplier) + 1

    def tier_for(self, delay: float) -> float:
        """The largest tier not longer than ``delay`` (the smallest tier if all are longer)."""
        return self.tiers[self.tier_index(delay)]

    @property
    def tiers_ms(self) -> Sequence[int]:
        return [round(t * 1000) for t in self.tiers]
