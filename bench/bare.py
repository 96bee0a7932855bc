"""The baselines: plain aio-pika on the same broker, queue type and message size."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.cpu import Probe, Sample, Window
from bench.measures import Phase
from bench.workload import body, run_limited
from tracker.rabbit.topology import declare_work_queue


async def bare_publish(
    amqp_url: str, queue: str, messages: int, concurrency: int, probe: Probe
) -> Phase:
    """Publish ``messages`` persistent 100-byte messages to ``queue`` (a quorum queue declared
    like the tracker's) on a confirming channel, ``concurrency`` awaiting their confirm."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_work_queue(channel, queue)
        exchange = channel.default_exchange
        bodies = [body(i) for i in range(messages)]

        async def publish(i: int) -> None:
            message = aio_pika.Message(bodies[i], delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key=queue)

        start = probe.read()
        await run_limited(messages, concurrency, publish)
        end = probe.read()
    return Phase(messages, Window.between(start, end))


async def bare_consume(
    amqp_url: str, queue: str, messages: int, prefetch: int, probe: Probe, timeout: float
) -> Phase:
    """Drain ``messages`` from ``queue`` with one consumer (``prefetch``), acking each; timed
    from the first delivery to the last ack."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await declare_work_queue(channel, queue)
        done = asyncio.Event()
        edges: list[Sample] = []
        count = redelivered = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal count, redelivered
            if not edges:
                edges.append(probe.read())
            redelivered += bool(message.redelivered)
            await message.ack()
            count += 1
            if count == messages:
                edges.append(probe.read())
                done.set()

        tag = await declared.consume(on_message)
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        finally:
            await declared.cancel(tag)
    return Phase(messages, Window.between(edges[0], edges[1]), redelivered=redelivered)
