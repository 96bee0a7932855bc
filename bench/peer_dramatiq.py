"""The Dramatiq peer: a no-op actor on RabbitMQ.

Worker: ``python -m dramatiq bench.peer_dramatiq --processes 1 --threads T``; producer:
``python -m bench.peer_dramatiq send N``. The queue, the count and the result file come
from ``BENCH_PEER_QUEUE``, ``BENCH_PEER_EXPECTED`` and ``BENCH_PEER_RESULT``.
"""

from __future__ import annotations

import os
import sys

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.peer_count import Completion

QUEUE = os.environ.get("BENCH_PEER_QUEUE", "bench-dramatiq")
broker = RabbitmqBroker(
    url=os.environ.get("TRACKER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
)
dramatiq.set_broker(broker)
completion = Completion.from_env()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(n: int, pad: str) -> None:
    completion.started()
    completion.finished(n)


def send(count: int) -> None:
    pad = "x" * 60  # a body of the same order as the others'; Dramatiq adds its envelope
    for i in range(count):
        noop.send(i, pad)
    broker.close()


if __name__ == "__main__":
    send(int(sys.argv[2]))
