"""Publishing on the aio-pika transport: the frame's properties are made directly, the same
as aio-pika's ``Message`` makes them, and a closed channel refuses at once."""

from __future__ import annotations

from typing import Any

import pytest
from aio_pika import DeliveryMode, Message
from aiormq.exceptions import ChannelInvalidStateError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from tracker.delivery.envelope import OutgoingMessage, task_message
from tracker.rabbit.aio_transport import publish
from tracker.rabbit.properties import TrackedProperties, properties

HEADER_VALUES = st.one_of(st.text(max_size=20), st.integers(0, 10_000), st.booleans())


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(st.text(min_size=1, max_size=10), HEADER_VALUES, max_size=6),
    message_id=st.text(min_size=1, max_size=40),
    correlation_id=st.text(min_size=1, max_size=40),
    expiration=st.none() | st.floats(min_value=0.001, max_value=86_400.0 * 365),
)
def test_the_properties_are_those_aio_pika_would_send(
    headers: dict[str, Any], message_id: str, correlation_id: str, expiration: float | None
) -> None:
    # Given
    message = OutgoingMessage(
        routing_key="q",
        body=b"{}",
        headers=headers,
        message_id=message_id,
        correlation_id=correlation_id,
        expiration=expiration,
    )
    # When
    ours = properties(message)
    theirs = Message(
        message.body,
        headers=message.headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        expiration=message.expiration,
    ).properties
    # Then: the same content header, byte for byte
    header = ContentHeader(weight=0, body_size=len(message.body), properties=ours)
    expected = ContentHeader(weight=0, body_size=len(message.body), properties=theirs)
    assert header.marshal() == expected.marshal()


async def test_a_closed_channel_refuses_before_anything_is_written() -> None:
    class Closed:
        is_closed = True

        async def get_underlay_channel(self) -> Any:
            raise AssertionError("nothing is written on a closed channel")

    message = OutgoingMessage("q", b"{}", {}, "e-1", "t-1")
    with pytest.raises(ChannelInvalidStateError):
        await publish(Closed(), message)  # type: ignore[arg-type]


# Anything a header or property could hold, inside and outside what the tracker writes
# itself: long and unencodable text, integers of any size, booleans, floats, nesting, None.
ANY_TEXT = st.text(max_size=300) | st.just("\ud800")
ANY_HEADER = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


# What the tracker's own messages hold: names and texts of any characters, small integers.
TRACKED_HEADERS = st.dictionaries(
    st.text(max_size=70), st.text(max_size=40) | st.integers(-200, 200), max_size=8
)


def _marshalled(props: Basic.Properties) -> bytes | type[BaseException]:
    try:
        return props.marshal()
    except Exception as error:
        return type(error)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "content_type": ANY_TEXT,
            "headers": st.dictionaries(ANY_TEXT, ANY_HEADER, max_size=6) | TRACKED_HEADERS,
            "delivery_mode": st.sampled_from([1, 2]),
            "priority": st.integers(0, 255),
            "correlation_id": ANY_TEXT,
            "expiration": ANY_TEXT,
            "message_id": ANY_TEXT,
            "app_id": ANY_TEXT,
            "reply_to": ANY_TEXT,
        },
    )
)
@example(fields={"headers": {"\U0001f600" * 40: "a name of 160 bytes, truncated by pamqp"}})
def test_the_tracked_encoding_writes_what_pamqp_writes_or_leaves_it_to_pamqp(
    fields: dict[str, Any],
) -> None:
    # Given: the same properties, encoded by the tracker and by pamqp alone
    ours = TrackedProperties(**fields)
    theirs = Basic.Properties(**fields)
    # When / Then: the same bytes, or the same error
    assert _marshalled(ours) == _marshalled(theirs)


def test_a_tracked_message_is_written_by_the_tracker_itself(monkeypatch: Any) -> None:
    # Given: a tracked message's properties, pamqp's generic encoding unavailable
    message = task_message(
        "q", b"{}", task_id="t-1", execution_id="e-1", retry_count=3, max_retries=5
    )
    expected = Basic.Properties.marshal(properties(message))

    def refuse(self: Basic.Properties) -> bytes:
        raise AssertionError("left to pamqp")

    monkeypatch.setattr(Basic.Properties, "marshal", refuse)
    # When / Then
    assert properties(message).marshal() == expected
