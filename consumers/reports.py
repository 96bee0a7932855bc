"""The report generator of the report service, as a tracked consumer.

A client submits search parameters and a format and gets the report id (the taskId) back at
once; identical requests within ``DEDUPE_WINDOW`` seconds share one report (the id is a hash
of the canonical parameters). The consumer searches in pages, writes each page as a part file,
then merges the parts into one document whose path is stored with the transition to
completed. Formats: ``csv``, and ``txt`` (a fixed-width text rendering; no PDF library is
worth the dependency here).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tracker

QUEUE = "reports"
DEDUPE_WINDOW = 60.0
PAGE_SIZE = 500
FORMATS = ("csv", "txt")
COLUMNS = ("order_id", "region", "product", "quantity", "amount")
REGIONS = ("north", "south", "east", "west")
PRODUCTS = ("anvil", "rocket", "magnet", "spring", "glue")


def output_dir() -> Path:
    return Path(os.environ.get("REPORTS_OUTPUT_DIR", "reports-output"))


def report_id(params: dict[str, Any], fmt: str) -> str:
    """The taskId of a request: a hash of its canonical parameters and format."""
    canonical = json.dumps({"params": params, "format": fmt}, sort_keys=True, separators=(",", ":"))
    return f"{QUEUE}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


async def submit(
    publisher: tracker.Publisher, params: dict[str, Any], fmt: str = "csv", queue: str = QUEUE
) -> tracker.EnqueueResult:
    """Request a report; returns at once. A request identical to one running, queued or
    completed within ``DEDUPE_WINDOW`` seconds returns that report instead."""
    return await publisher.enqueue(
        queue,
        {"params": params, "format": fmt},
        task_id=report_id(params, fmt),
        metadata={"format": fmt, "region": params.get("region")},
        dedupe_window=DEDUPE_WINDOW,
    )


async def status(report: str) -> dict[str, Any]:
    """What a client polling its report sees."""
    chain = await tracker.TaskTracker.find_retry_chain(report)
    if not chain:
        return {"id": report, "status": "unknown"}
    latest = chain[-1]
    return {
        "id": report,
        "status": latest.status.value,
        "attempts": len(chain),
        "path": (latest.result or {}).get("path") if isinstance(latest.result, dict) else None,
        "error": latest.error_message,
    }


@dataclass(frozen=True)
class Request:
    params: dict[str, Any]
    fmt: str

    @classmethod
    def parse(cls, payload: Any) -> Request:
        if not isinstance(payload, dict) or not isinstance(payload.get("params"), dict):
            raise tracker.ValidationError("a report request needs an object 'params'")
        fmt = payload.get("format", "csv")
        if fmt not in FORMATS:
            raise tracker.ValidationError(
                f"format {fmt!r} is not supported (supported: {', '.join(FORMATS)})"
            )
        rows = payload["params"].get("rows", 1000)
        if not isinstance(rows, int) or not 0 <= rows <= 1_000_000:
            raise tracker.ValidationError("params.rows must be an integer from 0 to 1000000")
        return cls(params=payload["params"], fmt=fmt)


def search(params: dict[str, Any], page: int) -> list[tuple[Any, ...]]:
    """One page of the search result (deterministic synthetic orders, filtered by region)."""
    total = params.get("rows", 1000)
    start = page * PAGE_SIZE
    rng = random.Random(f"{params.get('seed', 0)}:{page}")
    rows = []
    for order in range(start, min(start + PAGE_SIZE, total)):
        region = rng.choice(REGIONS)
        quantity = rng.randint(1, 20)
        row = (
            order,
            region,
            rng.choice(PRODUCTS),
            quantity,
            round(quantity * rng.uniform(3, 90), 2),
        )
        if params.get("region") in (None, region):
            rows.append(row)
    return rows


def render(rows: list[tuple[Any, ...]], fmt: str, header: bool) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if header:
            writer.writerow(COLUMNS)
        writer.writerows(rows)
        return buffer.getvalue()
    lines = [" ".join(f"{c:>10}" for c in COLUMNS)] if header else []
    lines += [" ".join(f"{v!s:>10}" for v in row) for row in rows]
    return "\n".join(lines) + ("\n" if lines else "")


def merge(parts: list[Path], final: Path) -> None:
    """Concatenate the page files into ``final`` and remove them with their folder."""
    with final.open("w") as merged:
        for part in parts:
            merged.write(part.read_text())
            part.unlink()
    if parts:
        parts[0].parent.rmdir()


@tracker.tracked(QUEUE, max_retries=3, timeout=300, timeout_message="make report timeout")
async def make_report(task: tracker.TaskContext) -> dict[str, Any]:
    request = Request.parse(task.payload)
    simulate = request.params.get("simulate")
    if simulate == "partner_down":
        raise tracker.PartnerAPIError("pricing partner answered 503 Service Unavailable")
    if simulate == "flaky" and task.retry_count == 0:
        raise tracker.TransientError("search index timed out, will retry")
    if simulate == "slow" and task.retry_count == 0:
        await asyncio.sleep(float(request.params.get("seconds", 600)))

    folder = output_dir() / task.task_id.replace(":", "_")
    parts_dir = folder / f"parts-{task.execution_id[:8]}"
    await asyncio.to_thread(parts_dir.mkdir, parents=True, exist_ok=True)
    total = request.params.get("rows", 1000)
    pages = max(1, -(-total // PAGE_SIZE))
    parts = []
    for page in range(pages):
        # Files are written on a thread: a large report must not block other handlers.
        text = render(search(request.params, page), request.fmt, header=page == 0)
        part = parts_dir / f"page-{page:05d}.{request.fmt}"
        await asyncio.to_thread(part.write_text, text)
        parts.append(part)
    final = folder / f"report.{request.fmt}"
    await asyncio.to_thread(merge, parts, final)
    task.log.info("report written", path=str(final), pages=pages)
    return {"path": str(final), "pages": pages, "format": request.fmt}


CONSUMERS = [make_report]
