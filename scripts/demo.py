"""The tracker core in one process: tasks created, deduplicated, claimed and finished, a retry
chain, and queue statistics, on the in-memory MongoDB."""

from __future__ import annotations

import asyncio

import tracker
from tracker import TaskStatus, TaskTracker


async def attempt(task_id: str, retry_count: int, outcome: TaskStatus, error: str = "") -> None:
    created = await tracker.create_execution(
        task_id, "reports", {"q": task_id}, retry_count=retry_count
    )
    won = await tracker.claim(created.execution.execution_id, worker="demo", lease=30)
    fields = {"errorMessage": error, "errorCategory": "transient"} if error else {}
    await tracker.transition(
        created.execution.execution_id, outcome, claim_token=won.token, message=error, fields=fields
    )


async def main() -> None:
    await tracker.connect(None, "demo")
    first = await tracker.create_execution("reports:daily-sales", "reports", {"day": "2026-11-23"})
    again = await tracker.create_execution("reports:daily-sales", "reports", {"day": "2026-11-23"})
    print(
        f"enqueued {first.execution.execution_id}; second enqueue deduplicated={again.deduplicated}"
    )

    await attempt("reports:weekly", 0, TaskStatus.FAILED, "partner timed out")
    await attempt("reports:weekly", 1, TaskStatus.FAILED, "partner timed out")
    await attempt("reports:weekly", 2, TaskStatus.COMPLETED)
    await attempt("reports:broken", 0, TaskStatus.DLQ, "unknown format 'xlsx'")

    print("\nretry chain of reports:weekly")
    for doc in await TaskTracker.find_retry_chain("reports:weekly"):
        print(f"  #{doc.retry_count} {doc.status.value:<10} {doc.error_message or ''}")
    print("\nqueue stats for reports")
    for status, count in (await TaskTracker.get_queue_stats("reports")).items():
        print(f"  {status:<10} {count}")


if __name__ == "__main__":
    asyncio.run(main())
