"""RabbitMQ adapters of the transport-free core: topology, publisher, worker (aio-pika) and
the synchronous pika adapter (``tracker.rabbit.pika``)."""

from __future__ import annotations

from tracker.enqueue import EnqueueResult
from tracker.rabbit.publisher import Publisher
from tracker.rabbit.worker import Worker

__all__ = ["EnqueueResult", "Publisher", "Worker"]
