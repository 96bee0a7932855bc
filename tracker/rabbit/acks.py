"""Acks of one channel's deliveries, gathered and written together.

A consumer at full speed acks a delivery every few dozen microseconds; one ``basic.ack``
frame each costs a socket write here and a frame to parse on the broker. The acks asked for
during one turn of the event loop go out together at the end of it: those that the channel's
settled deliveries join up with as one ``basic.ack`` with ``multiple``, the others one by one.

A multiple ack settles every outstanding delivery up to its tag, so it may only reach over
deliveries this process has settled itself: the ``floor`` is the highest tag up to which
every delivery of the channel was acked or nacked here. A delivery that never reached the
consumer (one the broker sent after its consumer was cancelled) or one still being handled
holds the floor back, and the acks above it go out one by one. Nacks are written at once,
before any later ack, and the tag of a multiple ack is always one being acked (the broker
closes the channel on an ack for a tag it does not hold).

An ack is handed to the connection's writer, as aiormq's own ``basic_ack`` does: a connection
that breaks before the frame leaves loses it, the broker redelivers the message, and the
recorded outcome makes the redelivery a skipped duplicate.
"""

from __future__ import annotations

import asyncio

import structlog
from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError

log = structlog.get_logger("tracker.rabbit.acks")


class ChannelAcks:
    """The settled deliveries of ``channel`` and the acks waiting to be written."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        # Every delivery tag up to ``floor`` is settled here; a channel's first tag is 1.
        self.floor = 0
        self._settled_above: set[int] = set()
        self._acks: list[int] = []
        self._writing: asyncio.Task[None] | None = None

    async def nack(self, tag: int, *, requeue: bool) -> None:
        """Refuse ``tag`` at once (returned to its queue, or dead-lettered when not
        ``requeue``): its frame goes out before any ack asked for later, and acks may then
        reach past it."""
        await self.channel.basic_nack(tag, requeue=requeue)
        self._settle(tag)

    def ack(self, tag: int) -> None:
        """Write the ack of ``tag`` at the end of this turn of the loop."""
        if self.channel.is_closed:
            raise ChannelInvalidStateError(f"{self.channel!r} closed")
        self._settle(tag)
        self._acks.append(tag)
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write())

    def _settle(self, tag: int) -> None:
        if tag != self.floor + 1:
            self._settled_above.add(tag)
            return
        floor, above = tag, self._settled_above
        while floor + 1 in above:
            floor += 1
            above.remove(floor)
        self.floor = floor

    async def _write(self) -> None:
        tags: list[int] = []
        try:
            # The deliveries settled in this turn of the loop ack together.
            await asyncio.sleep(0)
            while self._acks:
                tags, self._acks = self._acks, []
                for tag, multiple in frames(tags, self.floor):
                    await self.channel.basic_ack(tag, multiple=multiple, wait=False)
        except Exception as error:
            # The channel closed under us: the broker redelivers what was not acked.
            log.warning(
                "could not ack deliveries", error=repr(error), count=len(tags) + len(self._acks)
            )
            self._acks.clear()
        finally:
            self._writing = None


def frames(tags: list[int], floor: int) -> list[tuple[int, bool]]:
    """The ``(delivery tag, multiple)`` frames that ack ``tags``: one multiple ack for those
    at or below ``floor`` (every delivery up to it is settled), one frame each for the rest."""
    joined = [tag for tag in tags if tag <= floor]
    out: list[tuple[int, bool]] = []
    if len(joined) == 1:
        out.append((joined[0], False))
    elif joined:
        out.append((max(joined), True))
    out.extend((tag, False) for tag in sorted(tags) if tag > floor)
    return out
