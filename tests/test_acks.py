"""Acks written together (``tracker.rabbit.acks``): a multiple ack never reaches a delivery
that is not settled here, and every ack asked for is written exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.rabbit.acks import ChannelAcks, frames


class FakeChannel:
    """An aiormq channel as a broker sees it: the deliveries outstanding, and what each ack
    frame settles (a multiple ack whose own tag is not outstanding closes a real channel)."""

    def __init__(self, delivered: int) -> None:
        self.outstanding = set(range(1, delivered + 1))
        self.is_closed = False
        self.written: list[tuple[int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert not wait
        assert tag in self.outstanding, f"ack of a tag the broker does not hold: {tag}"
        self.written.append((tag, multiple))
        if multiple:
            self.outstanding -= {t for t in self.outstanding if t <= tag}
        else:
            self.outstanding.discard(tag)

    async def basic_nack(
        self, tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        assert not multiple
        assert tag in self.outstanding, f"nack of a tag the broker does not hold: {tag}"
        self.outstanding.discard(tag)


def test_contiguous_acks_are_one_multiple_frame() -> None:
    assert frames([3, 1, 2], floor=3) == [(3, True)]


def test_acks_above_an_unsettled_delivery_go_one_by_one() -> None:
    # Given: 1 and 2 acked, 3 still being handled, 4 and 5 acked
    assert frames([1, 2, 5, 4], floor=2) == [(2, True), (4, False), (5, False)]


def test_a_single_ack_is_not_multiple() -> None:
    assert frames([1], floor=1) == [(1, False)]
    assert frames([7], floor=3) == [(7, False)]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.permutations(list(range(1, n + 1))),
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.lists(st.integers(min_value=1, max_value=5), min_size=n, max_size=n),
            st.sets(st.integers(min_value=1, max_value=n)),
        )
    )
)
def test_any_settling_order_acks_exactly_the_acked_deliveries(case: Any) -> None:
    # Given: n deliveries settled in any order, some nacked, some never settled (a delivery
    # the consumer never saw), in turns of the loop of any size
    n, order, nacked, turns, never = case
    settled = [tag for tag in order if tag not in never]

    async def scenario() -> FakeChannel:
        channel = FakeChannel(n)
        acks = ChannelAcks(channel)  # type: ignore[arg-type]
        position = 0
        for size in turns:
            for tag in settled[position : position + size]:
                if nacked[tag - 1]:
                    await acks.nack(tag, requeue=tag % 2 == 0)
                else:
                    acks.ack(tag)
            position += size
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        for tag in settled[position:]:
            acks.ack(tag)
        for _ in range(3):
            await asyncio.sleep(0)
        return channel

    # When
    channel = asyncio.run(scenario())
    # Then: what is left outstanding is exactly what was never settled
    assert channel.outstanding == set(never)


async def test_an_ack_on_a_closed_channel_raises_at_once() -> None:
    channel = FakeChannel(1)
    channel.is_closed = True
    acks = ChannelAcks(channel)  # type: ignore[arg-type]
    with pytest.raises(ChannelInvalidStateError):
        acks.ack(1)
    assert channel.written == []


async def test_a_channel_closing_before_the_write_loses_the_acks_quietly() -> None:
    # Given: the channel fails the write (it closed in between)
    class Closing(FakeChannel):
        async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
            raise ChannelInvalidStateError("closed")

    acks = ChannelAcks(Closing(2))  # type: ignore[arg-type]
    # When
    acks.ack(1)
    acks.ack(2)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Then: nothing raised into the event loop; the next ack is written afresh
    assert acks._writing is None
