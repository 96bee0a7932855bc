"""Reading a delivery is total: any bytes with any headers read as a valid task or as a
validation failure with a reason, and nothing else escapes. No broker, no store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.constants import (
    HEADER_EXECUTION_ID,
    HEADER_MAX_RETRIES,
    HEADER_MESSAGE_VERSION,
    HEADER_RETRY_COUNT,
    HEADER_TASK_ID,
)
from tracker.delivery.envelope import Envelope, InvalidMessage, TaskMessage
from tracker.delivery.reading import MAX_COUNT, read
from tracker.delivery.rejection import kept_headers, rejection_id
from tracker.validation import MAX_NESTING, id_problem, storage_problem

HEADER_NAMES = [
    HEADER_TASK_ID,
    HEADER_EXECUTION_ID,
    HEADER_RETRY_COUNT,
    HEADER_MAX_RETRIES,
    HEADER_MESSAGE_VERSION,
    "x-death",
    "other",
]
header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES) | st.text(max_size=10), header_values, max_size=6
)
bodies = st.binary(max_size=300) | st.builds(
    lambda value: json.dumps(value).encode(),
    st.recursive(
        st.none() | st.integers() | st.text() | st.floats(allow_nan=False),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=10,
    ),
)
ids = st.none() | st.text(max_size=40)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, headers=headers, message_id=ids, correlation_id=ids, redelivered=st.booleans())
def test_any_delivery_reads_as_a_task_or_a_reason(
    body: bytes,
    headers: dict[str, Any],
    message_id: str | None,
    correlation_id: str | None,
    redelivered: bool,
) -> None:
    # Given: anything a broker could hand over
    envelope = Envelope("q", body, headers, message_id, correlation_id, redelivered)
    # When
    message = read(envelope, max_payload_bytes=256)
    # Then: a task the store can hold, or a readable reason
    if isinstance(message, TaskMessage):
        assert id_problem(message.task_id) is None
        assert id_problem(message.execution_id) is None
        assert 0 <= message.retry_count <= MAX_COUNT
        assert message.max_retries is None or 0 <= message.max_retries <= MAX_COUNT
        assert storage_problem(message.payload, "payload", 16 * 1024 * 1024) is None
    else:
        assert isinstance(message, InvalidMessage)
        assert message.reason
        message.reason.encode("utf-8")
        for claimed in (message.task_id, message.execution_id):
            assert claimed is None or id_problem(claimed) is None
    # and a rejected delivery's record id is derived from the delivery, the same every time
    assert rejection_id(envelope) == rejection_id(envelope)
    assert id_problem(rejection_id(envelope)) is None
    for name, value in kept_headers(headers):
        name.encode("utf-8")
        value.encode("utf-8")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


GOOD = {HEADER_TASK_ID: "t:1", HEADER_EXECUTION_ID: "e-1"}


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (nested(100_000), GOOD, "nested too deeply"),
        (nested(95), GOOD, "nested more than"),
        (b"[" + b"9" * 5000 + b"]", GOOD, "body is not valid JSON"),
        (b"[18446744073709551616]", GOOD, "cannot be stored"),
        (b'{"x": NaN}', GOOD, "NaN is not a JSON number"),
        (b"[-Infinity]", GOOD, "-Infinity is not a JSON number"),
        (b'"\\ud800"', GOOD, "cannot be stored"),
        (b'{"\\u0000": 1}', GOOD, "cannot be stored"),
        (b"{}", {**GOOD, HEADER_RETRY_COUNT: "²"}, "x-retry-count must be a non-negative"),
        (b"{}", {**GOOD, HEADER_RETRY_COUNT: 1e30}, "x-retry-count must be a non-negative"),
        (b"{}", {**GOOD, HEADER_RETRY_COUNT: 2**70}, "x-retry-count must be a non-negative"),
        (b"{}", {**GOOD, HEADER_RETRY_COUNT: True}, "x-retry-count must be a non-negative"),
        (b"{}", {**GOOD, HEADER_MAX_RETRIES: -1}, "x-max-retries must be a non-negative"),
        (b"{}", {**GOOD, HEADER_TASK_ID: "a\ud800b"}, "not valid Unicode"),
        (b"{}", {**GOOD, HEADER_TASK_ID: "a\x00b"}, "control characters"),
        (b"{}", {**GOOD, HEADER_TASK_ID: "x" * 600}, "over the 512-character limit"),
        (b"{}", {**GOOD, HEADER_TASK_ID: {"$ne": None}}, "must be a non-empty string"),
        (b"{}", {**GOOD, HEADER_MESSAGE_VERSION: b"\xff"}, "unsupported message version"),
        (b"\xff\xfe", GOOD, "body is not UTF-8 text"),
    ],
)
def test_hostile_deliveries_are_validation_failures(
    body: bytes, headers: dict[str, Any], reason: str
) -> None:
    # Given
    envelope = Envelope("q", body, headers, message_id=None, correlation_id=None)
    # When
    message = read(envelope)
    # Then
    assert isinstance(message, InvalidMessage)
    assert reason in message.reason


@pytest.mark.parametrize("depth", [1, 89, 90, 91, 92])
@pytest.mark.parametrize("shape", ["list", "object"])
def test_nesting_is_refused_from_one_level_over_the_limit_however_short_the_text(
    depth: int, shape: str
) -> None:
    # Given: the shortest texts of each depth around the limit (a short text skips the walk)
    body = nested(depth) if shape == "list" else b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    # When
    message = read(Envelope("q", body, GOOD, message_id=None, correlation_id=None))
    # Then
    if depth > MAX_NESTING:
        assert isinstance(message, InvalidMessage)
        assert "nested more than" in message.reason
    else:
        assert isinstance(message, TaskMessage)


def test_a_message_without_an_execution_id_gets_one_derived_from_the_delivery() -> None:
    # Given: a plain producer's message naming only its task
    envelope = Envelope("q", b'{"n": 1}', {}, message_id=None, correlation_id="orders:1")
    # When
    first, again = read(envelope), read(envelope)
    other = read(Envelope("q", b'{"n": 2}', {}, message_id=None, correlation_id="orders:1"))
    # Then: redeliveries are the same execution; another payload is another
    assert isinstance(first, TaskMessage)
    assert isinstance(again, TaskMessage)
    assert isinstance(other, TaskMessage)
    assert first.execution_id == again.execution_id != other.execution_id
    assert first.task_id == "orders:1"


def test_counts_accept_digits_as_text_and_bytes() -> None:
    envelope = Envelope("q", b"{}", {**GOOD, HEADER_RETRY_COUNT: b"3", HEADER_MAX_RETRIES: "4"})
    message = read(envelope)
    assert isinstance(message, TaskMessage)
    assert (message.retry_count, message.max_retries) == (3, 4)


def test_the_rejection_id_follows_the_message_id_or_the_content() -> None:
    a = Envelope("q", b"x", {}, message_id="m-1")
    assert rejection_id(a) == rejection_id(Envelope("q", b"other body", {}, message_id="m-1"))
    assert rejection_id(a) != rejection_id(Envelope("other", b"x", {}, message_id="m-1"))
    anonymous = Envelope("q", b"x", {"h": 1})
    assert rejection_id(anonymous) != rejection_id(Envelope("q", b"x", {"h": 2}))


@pytest.mark.parametrize("odd", [["t:1"], 5, {"$ne": None}, b"t:1"])
@pytest.mark.parametrize("field", ["correlation_id", "message_id"])
def test_an_id_property_that_is_no_string_is_a_reason_not_an_error(odd: Any, field: str) -> None:
    # Given: a transport that hands over an id property of another type (a list cannot even
    # be hashed), beside a usable task id
    envelope = Envelope("q", b"{}", {HEADER_TASK_ID: "t:1"}, **{field: odd})
    # When
    message = read(envelope)
    # Then
    assert isinstance(message, InvalidMessage)
    assert f"{field} must be a string" in message.reason
