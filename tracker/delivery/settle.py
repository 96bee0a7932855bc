"""The last step of a delivery: publish what the decision names, with confirms, then ack or
requeue. The same for every transport, so the order "outcome durable, follow-ups confirmed,
then ack" cannot differ between adapters."""

from __future__ import annotations

import asyncio

import structlog

from tracker.delivery.decision import Decision
from tracker.delivery.processor import Processor
from tracker.transport import Delivery, Transport

log = structlog.get_logger("tracker.settle")


async def handle(processor: Processor, delivery: Delivery, transport: Transport) -> Decision:
    """Process one delivery to the end: its outcome recorded, follow-ups published, settled.
    An unexpected error requeues the delivery after ``requeue_delay``."""
    envelope = delivery.envelope
    try:
        decision = await processor.process(envelope)
        for outgoing in decision.publish:
            await transport.publish(outgoing)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("delivery could not be processed; requeued", queue=envelope.queue)
        decision = Decision("error", requeue=True, requeue_delay=processor.options.requeue_delay)
    await settle(delivery, decision, processor)
    return decision


async def settle(delivery: Delivery, decision: Decision, processor: Processor) -> None:
    """Ack the delivery, or requeue it after the decision's delay. A failure to settle (the
    channel closed under us) is logged: the broker redelivers, and the outcome already
    recorded makes the redelivery a skipped duplicate.

    A delivery whose handler interrupted the worker is left unsettled: the worker stops, its
    channel closes, and the broker delivers it to another consumer (a requeue now could hand
    it straight back to this one)."""
    if decision.interrupt is not None:
        return
    await processor.hooks.run("before_ack", delivery.envelope, decision)
    try:
        if decision.park:
            await delivery.dead_letter()
        elif decision.requeue:
            await asyncio.sleep(decision.requeue_delay)
            await delivery.requeue()
        else:
            await delivery.ack()
    except Exception as exc:
        log.warning("could not settle the delivery", error=str(exc), queue=delivery.envelope.queue)
