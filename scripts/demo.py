"""The product's main job, end to end in one process: the report service of the report service
behind the tracker, on the local RabbitMQ and the in-memory MongoDB.

Submits a stream of report requests (with duplicates, a malformed message, one that fails
transiently, one whose partner stays down, one whose first attempt hangs past its timeout),
shows progress, then the report service as its HTTP clients use it (``demo_http``: submit,
poll, download, a failure, a duplicate, each shown as curl), the dead letters grouped by
cause as the operator sees them (``tracker --service URL groups list``, run in a process of
its own), then prints the retry chains, queue statistics and where the files went. With
``--console`` (``make console``) the service and its console then stay up, at the printed
URL, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
from demo_http import http_flow

import tracker
from consumers import report_api, reports
from consumers.report_files import ENV as REPORTS_DIR_ENV
from consumers.report_files import ReportFiles
from consumers.report_status import find_report
from tracker import TaskTracker
from tracker.logging import configure_logging
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.rabbit.topology import topology_queue_names
from tracker.retry import RetryPolicy
from tracker.service.assembly import Service, ServiceOptions
from tracker.settings import Settings

# The demo's own queues, deleted at the end, so it never touches a real "reports" queue.
QUEUE = "reports-demo"
REQUESTS = [
    {"region": "north", "rows": 1200},
    {"region": "south", "rows": 800},
    {"region": "east", "rows": 3000},
    {"region": "west", "rows": 400},
    {"rows": 2500},
    {"region": "north", "rows": 1200},  # a duplicate of the first
    {"region": "east", "rows": 3000},  # a duplicate of the third
    {"region": "south", "rows": 600, "simulate": "flaky"},
    {"region": "west", "rows": 100, "simulate": "partner_down"},
    {"region": "east", "rows": 200, "simulate": "slow", "seconds": 30},  # first attempt hangs
]


def line(text: str = "") -> None:
    print(text, flush=True)


async def progress(queue: str, expected: int, deadline: float) -> dict[str, int]:
    """Show the statuses live (one redrawn line on a terminal, a line per change otherwise)
    until every task is final or the deadline passes."""
    shown = ""
    while True:
        stats = await TaskTracker.get_queue_stats(queue)
        finals = stats["completed"] + stats["dlq"] + stats["archived"]
        bar = "#" * int(30 * min(finals, expected) / expected)
        status = "  ".join(f"{k} {v}" for k, v in stats.items())
        if sys.stdout.isatty():
            sys.stdout.write(f"\r  [{bar:<30}] {status}   ")
        elif status != shown:
            sys.stdout.write(f"  [{bar:<30}] {status}\n")
        shown = status
        sys.stdout.flush()
        if finals >= expected and stats["queued"] == stats["processing"] == 0:
            sys.stdout.write("\n" if sys.stdout.isatty() else "")
            return stats
        if time.monotonic() > deadline:
            raise SystemExit("\nthe demo did not finish in time")
        await asyncio.sleep(0.2)


async def interrupted() -> None:
    """Return on Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def main(console: bool = False) -> None:
    settings = Settings.from_env()
    configure_logging("console", os.environ.get("TRACKER_LOG_LEVEL", "ERROR"))
    files = (
        ReportFiles.from_env()
        if os.environ.get(REPORTS_DIR_ENV)
        else ReportFiles(Path(tempfile.mkdtemp(prefix="tracker-demo-")))
    )
    await tracker.connect(None, "demo")
    line("tracker demo: report service on RabbitMQ at " + settings.amqp_url.split("@")[-1])
    line("  MongoDB: in-memory (this process only)")
    line(f"  reports go to {files.root}")

    # The report consumer with a short retry policy and timeout, so the demo's retries and
    # its timeout happen in seconds, not minutes.
    policy = RetryPolicy(initial_delay=0.5, tiers=(0.5, 1, 2))
    consumer = reports.consumer(QUEUE, files, max_retries=2, retry_policy=policy, timeout=2)
    started = time.monotonic()
    # The service as `tracker serve consumers.reports` runs it, with the report routes; with
    # --console on its HTTP port (and it stays up afterwards), else on any free loopback one.
    worker = Service(
        [consumer],
        AioPikaTransport(settings.amqp_url, prefetch=4),
        ServiceOptions(
            concurrency=4,
            lease=3,
            shutdown_timeout=2,
            http_port=settings.service_http_port if console else 0,
            http_host=settings.http_host if console else "127.0.0.1",
            api_tokens=settings.api_tokens,
            redact_fields=settings.redact_fields,
        ),
        routers=[report_api.router(QUEUE, files)],
    )
    await worker.start()
    try:
        async with tracker.Publisher(settings.amqp_url) as pub:
            submitted: list[tracker.EnqueueResult] = []
            for params in REQUESTS:
                submitted.append(await reports.submit(pub, params, queue=QUEUE))
            # A client that skips the checks `submit` makes: the consumer refuses it.
            submitted.append(await pub.enqueue(QUEUE, {"params": {"rows": 10}, "format": "xlsx"}))
            connection = await aio_pika.connect(settings.amqp_url)
            async with connection:
                channel = await connection.channel()
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{this is not json", message_id="malformed-1"),
                    routing_key=QUEUE,
                )
        deduplicated = sum(r.deduplicated for r in submitted)
        line(
            f"\nsubmitted {len(submitted)} requests + 1 malformed message; "
            f"{deduplicated} deduplicated at enqueue"
        )
        unique = len({r.task_id for r in submitted}) + 1
        stats = await progress(QUEUE, unique, time.monotonic() + 45)
        assert worker.http_server is not None
        token = next((t.token for t in settings.api_tokens if t.role == "operator"), None)
        base = f"http://127.0.0.1:{worker.http_server.port}"
        line("\nthe report service over HTTP, as its clients use it")
        await http_flow(base + "/", token, line)
        # The operator's view, from another process: the command on the service's API.
        line(f"\ndead letters, grouped by cause: tracker --service {base} groups list -q {QUEUE}")
        await operator_command(base, token, ["groups", "list", "--queue", QUEUE], line)
    except BaseException:
        await worker.stop()
        raise
    if not console:
        await worker.stop()

    line("\nretry chains")
    for task_id in dict.fromkeys(r.task_id for r in submitted):
        chain = await TaskTracker.find_retry_chain(task_id)
        if len(chain) > 1:
            line(f"  {task_id}")
            for doc in chain:
                error = (
                    f"  {doc.error_category.value}: {doc.error_message}"
                    if doc.error_category
                    else ""
                )
                line(f"    #{doc.retry_count} {doc.status.value:<10}{error}")

    line("\nqueue stats: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    line("\nreports written")
    for result in submitted:
        if result.deduplicated:
            continue
        report = await find_report(result.task_id, QUEUE)
        if report is not None and report.status == "SUCCESS":
            line(f"  {result.task_id}  {report.execution.result['path']}")
    line(f"\ndone in {time.monotonic() - started:.1f}s")
    if console:
        assert worker.http_server is not None
        url = f"http://127.0.0.1:{worker.http_server.port}/"
        line(f"\nconsole: {url}  (the service keeps running; Ctrl-C to stop)")
        await interrupted()
        await worker.stop()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in topology_queue_names(QUEUE, policy.tiers_ms, round(consumer.timeout * 1000)):
            await channel.queue_delete(name)


async def operator_command(
    base: str, token: str | None, args: list[str], line: Callable[[str], None]
) -> None:
    """Run ``tracker --service base ARGS`` in a process of its own and show what it prints."""
    env = {**os.environ, "TRACKER_SERVICE_URL": base}
    env.pop("TRACKER_MONGODB_URL", None)
    if token is not None:
        env["TRACKER_SERVICE_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    for text in output.decode(errors="replace").splitlines():
        line("  " + text)
    if process.returncode != 0:
        raise SystemExit(f"tracker {' '.join(args)} exited {process.returncode}")


if __name__ == "__main__":
    asyncio.run(main(console="--console" in sys.argv[1:]))
