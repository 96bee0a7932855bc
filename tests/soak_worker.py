"""One worker process of the fault soak (``tests/soak.py``).

    python -m tests.soak_worker --amqp URL --mongodb URL --database DB --queue Q \\
        --completions PATH --id NAME

A ``tracker.Worker`` on one queue whose handler leaves a trace of every run in two files shared
by all the soak's workers, each opened with ``O_APPEND`` and written one line (< 4096 bytes) per
``write``, so lines from several processes never interleave:

- ``--starts`` (default ``COMPLETIONS.starts``):
  ``start TASK_ID EXECUTION_ID WORKER PID RETRY_COUNT LONG UNIX_TIME``, when a run begins;
  ``LONG`` is 1 for a long run (the soak picks a worker to kill among those inside one);
- ``--completions``: ``TASK_ID EXECUTION_ID WORKER PID``, written when the handler has done its
  work and is about to return: before the tracker records the outcome, so a run that completed
  but whose outcome never became durable is visible.

The payload says what the handler does (the soak decides, so it knows what to expect):
``{"n": i, "fate": "ok" | "transient" | "invalid", "sleep": seconds}``. A ``transient`` task
raises ``TransientError`` on its first attempt only; an ``invalid`` one raises
``ValidationError`` (dead-lettered at once). ``sleep`` 0 means a short random sleep (0-20 ms).

Logs go to stderr as JSON lines; ``ready WORKER_ID`` goes to stdout once the worker consumes.
The process stops gracefully on SIGTERM/SIGINT and exits on its own when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import tracker
from tests.rabbit import FAST
from tracker.logging import configure_logging

MAX_LINE = 4096  # PIPE_BUF: one write of fewer bytes is never split by another process's


class TraceFile:
    """A file shared by processes, appended one whole line per write."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, *fields: object) -> None:
        line = (" ".join(str(field) for field in fields) + "\n").encode()
        if len(line) >= MAX_LINE:
            raise ValueError(f"trace line of {len(line)} bytes: appends could interleave")
        os.write(self.fd, line)

    def close(self) -> None:
        os.close(self.fd)


def soak_consumer(
    queue: str, name: str, starts: TraceFile, completions: TraceFile, *, max_retries: int = 3
) -> tracker.TrackedConsumer:
    """The soak's handler on ``queue``, tracing its runs as worker ``name``."""
    pid = os.getpid()
    rng = random.Random()

    @tracker.tracked(queue, max_retries=max_retries, retry_policy=FAST, timeout=30)
    async def soak_task(task: tracker.TaskContext) -> dict[str, Any]:
        payload = task.payload if isinstance(task.payload, dict) else {}
        fate = payload.get("fate", "ok")
        long_sleep = float(payload.get("sleep") or 0.0)
        starts.append(
            "start",
            task.task_id,
            task.execution_id,
            name,
            pid,
            task.retry_count,
            int(long_sleep > 0),
            f"{time.time():.3f}",
        )
        await asyncio.sleep(long_sleep or rng.random() * 0.02)
        if fate == "invalid":
            raise tracker.ValidationError("soak: invalid input")
        if fate == "transient" and task.retry_count == 0:
            raise tracker.TransientError("soak: flaky first attempt")
        completions.append(task.task_id, task.execution_id, name, pid)
        return {"worker": name, "pid": pid}

    return soak_task


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """An orphaned worker stops: the soak that started it is gone."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


async def run(args: argparse.Namespace) -> int:
    configure_logging("json", args.log_level)
    await tracker.connect(args.mongodb, args.database)
    starts = TraceFile(args.starts or f"{args.completions}.starts")
    completions = TraceFile(args.completions)
    worker_id = f"{args.id}:{os.getpid()}"
    consumer = soak_consumer(args.queue, args.id, starts, completions)
    worker = tracker.Worker(
        [consumer],
        args.amqp,
        concurrency=args.concurrency,
        lease=args.lease,
        requeue_delay=args.requeue_delay,
        shutdown_timeout=args.shutdown_timeout,
        worker_id=worker_id,
        stats_interval=None,
        sweep_interval=args.sweep_interval or None,
        stuck_grace=args.stuck_grace,
        republish_after=args.republish_after,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchdog = asyncio.create_task(_watch_parent(args.parent or os.getppid(), stop))
    try:
        await worker.start()
        print(f"ready {worker_id}", flush=True)
        stopped = asyncio.create_task(worker.run_forever())
        asked = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()
        await worker.stop()
        with contextlib.suppress(Exception):
            await stopped
    finally:
        watchdog.cancel()
        await tracker.disconnect()
        starts.close()
        completions.close()
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak_worker", description=__doc__)
    parser.add_argument("--amqp", required=True, help="RabbitMQ URL")
    parser.add_argument("--mongodb", required=True, help="MongoDB URL (the soak's stand-in)")
    parser.add_argument("--database", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--completions", required=True, help="the shared completions file")
    parser.add_argument("--id", required=True, help="this worker's name (w1, w2, ...)")
    parser.add_argument("--starts", default=None, help="default: COMPLETIONS.starts")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--requeue-delay", type=float, default=0.2)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--sweep-interval", type=float, default=5.0, help="0: no sweeper")
    parser.add_argument("--stuck-grace", type=float, default=10.0)
    parser.add_argument("--republish-after", type=float, default=600.0)
    parser.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
