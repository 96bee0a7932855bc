"""The Celery peer: a no-op task on RabbitMQ, acked late (after it ran, as the tracker does).

Worker: ``python -m celery -A bench.peer_celery worker --pool threads --concurrency T …``;
producer: ``python -m bench.peer_celery send N``. The queue, the count and the result file
come from ``BENCH_PEER_QUEUE``, ``BENCH_PEER_EXPECTED`` and ``BENCH_PEER_RESULT``.
"""

from __future__ import annotations

import os
import sys

from celery import Celery

from bench.peer_count import Completion

QUEUE = os.environ.get("BENCH_PEER_QUEUE", "bench-celery")
app = Celery(
    "bench_peer",
    broker=os.environ.get("TRACKER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_acks_late=True,
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
completion = Completion.from_env()


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(n: int, pad: str) -> None:
    completion.started()
    completion.finished(n)


def send(count: int) -> None:
    pad = "x" * 60
    with app.producer_or_acquire() as producer:
        for i in range(count):
            noop.apply_async((i, pad), producer=producer)


if __name__ == "__main__":
    send(int(sys.argv[2]))
