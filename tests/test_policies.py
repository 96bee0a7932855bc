"""The pure policies a delivery's outcome rests on, without a store or a broker: how long a
retry waits (``RetryPolicy``) and which category an error falls in (``classify``)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect

from tracker import ErrorCategory, TransientError, ValidationError
from tracker.classify import classify
from tracker.retry import RetryPolicy

policies = st.builds(
    RetryPolicy,
    initial_delay=st.floats(min_value=0.001, max_value=1e6),
    multiplier=st.floats(min_value=1.0, max_value=1e3),
    max_delay=st.floats(min_value=0.001, max_value=1e9),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)


@given(policy=policies, retry_count=st.integers(min_value=-(10**6), max_value=10**30))
def test_any_retry_count_waits_a_finite_delay_within_the_bound(
    policy: RetryPolicy, retry_count: int
) -> None:
    # When
    delay = policy.backoff(retry_count, random.Random(0))
    # Then: never an overflow, never more than the larger of the first and the last delay
    assert 0 <= delay <= max(policy.max_delay, policy.initial_delay)
    assert policy.tier_for(delay) in policy.tiers


def test_a_huge_retry_count_waits_the_longest_delay() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.backoff(10**6) == policy.max_delay
    assert policy.backoff(10**100) == policy.max_delay
    assert [policy.backoff(n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"jitter": 1.5}, "jitter"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"initial_delay": 0}, "initial_delay"),
        ({"max_delay": float("inf")}, "finite"),
        ({"tiers": ()}, "tiers"),
        ({"tiers": (10.0, 5.0)}, "increasing"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(options: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        RetryPolicy(**options)  # type: ignore[arg-type]


class HttpError(Exception):
    def __init__(self, status: object) -> None:
        super().__init__(f"status {status}")
        self.status_code = status


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (ValidationError("bad row"), ErrorCategory.VALIDATION),
        (TransientError("later"), ErrorCategory.TRANSIENT),
        (TimeoutError(), ErrorCategory.TRANSIENT),
        (ConnectionResetError(), ErrorCategory.TRANSIENT),
        (AutoReconnect("primary stepped down"), ErrorCategory.INFRASTRUCTURE),
        (json.JSONDecodeError("x", "", 0), ErrorCategory.VALIDATION),
        (KeyError("field"), ErrorCategory.VALIDATION),
        (TypeError("None + 1"), ErrorCategory.PROCESSING),
        (HttpError(503), ErrorCategory.PARTNER_API),
        (HttpError("503"), ErrorCategory.UNKNOWN),
        (HttpError(99999), ErrorCategory.UNKNOWN),
        (RuntimeError("?"), ErrorCategory.UNKNOWN),
    ],
)
def test_each_error_falls_in_its_category(error: BaseException, category: ErrorCategory) -> None:
    assert classify(error) is category


def test_the_consumer_s_hook_and_retry_on_come_before_the_defaults() -> None:
    # Given: a hook that knows one error, and a retry_on for another
    def hook(error: BaseException) -> str | None:
        return "partner_api" if isinstance(error, LookupError) else None

    # When / Then
    assert classify(IndexError(), hook=hook) is ErrorCategory.PARTNER_API
    assert classify(ValueError(), hook=hook, retry_on=(ValueError,)) is ErrorCategory.TRANSIENT
    assert classify(ValueError(), hook=hook) is ErrorCategory.VALIDATION


@given(st.text(), st.integers())
def test_any_error_has_a_category(text: str, status: int) -> None:
    assert isinstance(classify(HttpError(status)), ErrorCategory)
    assert isinstance(classify(Exception(text)), ErrorCategory)
