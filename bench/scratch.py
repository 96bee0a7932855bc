"""Fresh queue names for one run on the shared broker, and deleting every queue (and exchange)
the run created, also when it fails."""

from __future__ import annotations

import contextlib
import itertools
import uuid

import aio_pika
import aiormq


class Scratch:
    """``name(kind)`` gives a queue name no one else uses (``bench-<run>-<kind>-<n>``);
    ``own`` records queues and exchanges to delete; ``delete`` deletes them."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self._numbers = itertools.count(1)
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, kind: str) -> str:
        return f"{self.prefix}-{kind}-{next(self._numbers)}"

    def own(self, queues: list[str] = [], exchanges: list[str] = []) -> None:  # noqa: B006
        self.queues += [q for q in queues if q not in self.queues]
        self.exchanges += [e for e in exchanges if e not in self.exchanges]

    async def delete_all(self) -> None:
        await self.delete(list(self.queues), list(self.exchanges))

    async def delete(self, queues: list[str], exchanges: list[str] = []) -> None:  # noqa: B006
        """Delete ``queues`` and ``exchanges``; each is forgotten once deleted. One that does
        not exist is not an error."""
        if not queues and not exchanges:
            return
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                try:
                    await channel.queue_delete(name)
                except aiormq.exceptions.AMQPError:
                    channel = await connection.channel()  # the error closed the channel
                with contextlib.suppress(ValueError):
                    self.queues.remove(name)
            for name in exchanges:
                try:
                    await channel.exchange_delete(name)
                except aiormq.exceptions.AMQPError:
                    channel = await connection.channel()
                with contextlib.suppress(ValueError):
                    self.exchanges.remove(name)
