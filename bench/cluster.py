"""`make cluster-bench`: the throughput of one, two and three worker processes against a
three-node RabbitMQ cluster on private ports, with the MongoDB stand-in as the store.

For each worker count: N tracked tasks are enqueued first (not timed) on a fresh quorum
queue replicated on the three nodes; then the worker processes (tests/soak_worker.py, given
all three node URLs) start, and the time is taken from the first handler's start (their
trace) until every task has completed. Everything shares this machine's cores: the three
broker nodes, the stand-in, the workers and this process. Printed as Markdown.

    python -m bench.cluster [--tasks 5000] [--workers 1,2,3] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import tracker
from tests.broker_nodes import PrivateCluster
from tests.mongo_standin.process import StandIn
from tracker.store import connection


async def _enqueue_all(url: str, mongodb: str, database: str, queue: str, tasks: int) -> None:
    await tracker.connect(mongodb, database)
    await connection.ensure_indexes()
    try:
        async with tracker.Publisher(url) as pub:
            for start in range(0, tasks, 100):
                await asyncio.gather(
                    *(
                        pub.enqueue(queue, {"n": n, "fate": "ok", "sleep": 0.001})
                        for n in range(start, min(start + 100, tasks))
                    )
                )
    finally:
        await tracker.disconnect()


def _run_workers(
    cluster: PrivateCluster,
    mongodb: str,
    database: str,
    queue: str,
    workers: int,
    concurrency: int,
    tasks: int,
    workdir: Path,
) -> tuple[float, float]:
    """Start the workers, wait until every task completed; (seconds from the first to the
    last completion, seconds until all were ready)."""
    completions = workdir / f"{queue}.completions"
    completions.touch()
    processes = []
    began = time.monotonic()
    for i in range(workers):
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.soak_worker",
                    "--amqp",
                    cluster.url_list,
                    "--mongodb",
                    mongodb,
                    "--database",
                    database,
                    "--queue",
                    queue,
                    "--completions",
                    str(completions),
                    "--id",
                    f"w{i + 1}",
                    "--concurrency",
                    str(concurrency),
                    "--lease",
                    "30",
                    "--sweep-interval",
                    "0",
                    "--parent",
                    str(os.getpid()),
                    "--log-level",
                    "WARNING",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    try:
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()  # "ready ..."
        ready = time.monotonic() - began
        deadline = time.monotonic() + 600
        while (done := len(completions.read_text().splitlines())) < tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {tasks} completed in 600 s")
            time.sleep(0.05)
        finished = time.time()
        # The starts trace ends each line with the run's start time (Unix seconds).
        starts = Path(f"{completions}.starts").read_text().splitlines()
        first = min(float(line.split()[-1]) for line in starts)
        return finished - first, ready
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    counts = [int(part) for part in args.workers.split(",")]
    cluster = PrivateCluster(3).start()
    try:
        with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
            rows = []
            for workers in counts:
                queue = f"cluster-bench-{uuid.uuid4().hex[:6]}"
                database = f"cluster_bench_{uuid.uuid4().hex[:6]}"
                asyncio.run(
                    _enqueue_all(cluster.url_list, standin.url, database, queue, args.tasks)
                )
                elapsed, ready = _run_workers(
                    cluster,
                    standin.url,
                    database,
                    queue,
                    workers,
                    args.concurrency,
                    args.tasks,
                    Path(tmp),
                )
                rows.append((workers, args.tasks / elapsed if elapsed else 0.0, elapsed, ready))
        print(f"\n{args.tasks} tasks per run, concurrency {args.concurrency} per worker\n")
        print("| worker processes | tasks/s | seconds | workers ready after (s) |")
        print("|---|---|---|---|")
        for workers, rate, elapsed, ready in rows:
            print(f"| {workers} | {rate:,.0f} | {elapsed:.1f} | {ready:.1f} |")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
