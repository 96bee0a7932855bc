"""Publishing on the aio-pika transport: the frame's properties are made directly, the same
as aio-pika's ``Message`` makes them, and a closed channel refuses at once."""

from __future__ import annotations

from typing import Any

import pytest
from aio_pika import DeliveryMode, Message
from aiormq.exceptions import ChannelInvalidStateError
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from tracker.delivery.envelope import OutgoingMessage
from tracker.rabbit.aio_transport import properties, publish

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
