"""The report generator of the report service, as a tracked consumer with its HTTP routes.

A client submits search parameters and a format (``POST /api/v1/reports``, or ``submit``)
and gets the report id (the taskId) back at once; identical requests within
``DEDUPE_WINDOW`` seconds share one report (the id is a hash of the canonical parameters).
The consumer searches in pages, writes each page as a part file, then merges the parts into
one document whose path is stored with the transition to completed. Formats: ``csv``,
``pdf`` (``report_pdf``: fpdf2 writes the parts, pypdf merges them) and ``txt`` (fixed
width). Documents live in ``TRACKER_REPORTS_DIR`` (``report_files``); the sweeper removes
each before its record expires.

``tracker serve consumers.reports`` runs ``CONSUMERS`` and mounts ``ROUTER``; ``consumer``
and ``report_api.router`` build the same for another queue or directory (tests, the demo).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import random
import shutil
from pathlib import Path
from typing import Any

import tracker
from consumers import report_api, report_pdf
from consumers.report_files import ReportFiles
from consumers.report_request import (
    COLUMNS,
    DEDUPE_WINDOW,
    FORMATS,
    PRODUCTS,
    QUEUE,
    REGIONS,
    Request,
    report_id,
    submit,
)
from consumers.report_status import find_report
from tracker.consumer import Handler

__all__ = [
    "COLUMNS",
    "CONSUMERS",
    "DEDUPE_WINDOW",
    "FILES",
    "FORMATS",
    "QUEUE",
    "ROUTER",
    "Request",
    "consumer",
    "make_report",
    "report_id",
    "search",
    "status",
    "submit",
]

PAGE_SIZE = 500
TIMEOUT_MESSAGE = "make report timeout"
# Read once, here: this module is what `tracker serve` loads (see report_files).
FILES = ReportFiles.from_env()


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
    """A page as CSV or fixed-width text (the header on the first page only)."""
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


def title(request: Request) -> str:
    """The PDF's title line: what was searched."""
    region = request.params.get("region") or "all regions"
    return f"Orders report: {region}, {request.rows:,} rows, seed {request.params.get('seed', 0)}"


def write_part(part: Path, request: Request, page: int) -> None:
    """Search one page and write it as a part (blocking: run on a thread)."""
    rows = search(request.params, page)
    if request.fmt == "pdf":
        part.write_bytes(report_pdf.render_page(rows, COLUMNS, page, title(request)))
    else:
        part.write_text(render(rows, request.fmt, header=page == 0))


def merge(parts: list[Path], final: Path) -> None:
    """Concatenate the text parts into ``final`` and remove them with their folder."""
    partial = final.with_name(final.name + ".partial")
    with partial.open("w") as merged:
        for part in parts:
            merged.write(part.read_text())
            part.unlink()
    partial.replace(final)
    if parts:
        parts[0].parent.rmdir()


def handler(files: ReportFiles) -> Handler:
    """The report handler, writing into ``files``."""

    async def make_report(task: tracker.TaskContext) -> dict[str, Any]:
        request = Request.parse(task.payload)
        simulate = request.params.get("simulate")
        if simulate == "partner_down":
            raise tracker.PartnerAPIError("pricing partner answered 503 Service Unavailable")
        if simulate == "flaky" and task.retry_count == 0:
            raise tracker.TransientError("search index timed out, will retry")
        if simulate == "slow" and task.retry_count == 0:
            await asyncio.sleep(float(request.params.get("seconds", 600)))

        parts_dir = files.parts(task.task_id, task.execution_id)
        final = files.document(task.task_id, task.execution_id, request.fmt)
        pages = max(1, -(-request.rows // PAGE_SIZE))
        try:
            await asyncio.to_thread(parts_dir.mkdir, parents=True, exist_ok=True)
            parts = []
            for page in range(pages):
                # Parts are searched and written on a thread: a large report (a PDF above
                # all) must not block other handlers.
                part = parts_dir / f"page-{page:05d}.{request.fmt}"
                await asyncio.to_thread(write_part, part, request, page)
                parts.append(part)
            if request.fmt == "pdf":
                await asyncio.to_thread(report_pdf.merge, parts, final, title(request))
            else:
                await asyncio.to_thread(merge, parts, final)
        except BaseException:
            # Nothing left behind by a failed or timed-out attempt (synchronous: a cancelled
            # task cannot await, and a few files go fast).
            shutil.rmtree(parts_dir, ignore_errors=True)
            final.with_name(final.name + ".partial").unlink(missing_ok=True)
            raise
        task.log.info("report written", path=str(final), pages=pages)
        return {"path": str(final), "pages": pages, "format": request.fmt}

    return make_report


def consumer(
    queue: str = QUEUE, files: ReportFiles = FILES, **rules: Any
) -> tracker.TrackedConsumer:
    """The report consumer on ``queue``, writing into ``files``, its documents released
    before their records expire; ``rules`` override ``@tracked``'s options."""
    options: dict[str, Any] = {
        "max_retries": 3,
        "timeout": 300,
        "timeout_message": TIMEOUT_MESSAGE,
        **rules,
    }
    tracked = tracker.tracked(queue, **options)(handler(files))
    return dataclasses.replace(tracked, label="make_report").releasing(files.release)


async def status(report: str, queue: str = QUEUE) -> dict[str, Any] | None:
    """What a client polling its report sees (as ``GET /api/v1/reports/{id}``), or None."""
    found = await find_report(report, queue)
    return None if found is None else found.view()


make_report = consumer()
CONSUMERS = [make_report]
ROUTER = report_api.router(QUEUE, FILES)
