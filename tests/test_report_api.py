"""The report service as its HTTP clients use it, on the real broker: submit, poll, download,
deduplication, each status (RUNNING, SUCCESS, FAIL with its message, "make report timeout"),
and 409 while running."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

import tracker
from consumers import reports
from consumers.report_files import ReportFiles
from tests.rabbit import FAST, Broker
from tests.report_helpers import JSON, poll, report_api_client
from tracker.rabbit.aio_transport import AioPikaTransport

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


@pytest.fixture
def files(tmp_path: Path) -> ReportFiles:
    return ReportFiles(tmp_path / "reports")


@pytest.fixture
async def queue(broker: Broker) -> str:
    return await broker.new_queue()


@pytest.fixture
async def api(broker: Broker, queue: str, files: ReportFiles) -> AsyncIterator[httpx.AsyncClient]:
    """The service's API with the report routes, publishing on its own open transport."""
    transport = AioPikaTransport(broker.url)
    await transport.open()
    try:
        async with report_api_client(queue, files, transport) as http:
            yield http
    finally:
        await transport.close()


def worker(
    broker: Broker, queue: str, files: ReportFiles, timeout: float = 60, max_retries: int = 1
) -> tracker.Worker:
    consumer = reports.consumer(
        queue, files, max_retries=max_retries, retry_policy=FAST, timeout=timeout
    )
    return tracker.Worker([consumer], broker.url, lease=3, stats_interval=None, sweep_interval=None)


async def submit(api: httpx.AsyncClient, params: dict[str, Any], fmt: str = "csv") -> Any:
    return await api.post("/api/v1/reports", json={"params": params, "format": fmt}, headers=JSON)


async def test_a_csv_report_is_submitted_polled_and_downloaded(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given
    params = {"rows": 1200, "region": "north", "seed": 7}
    async with worker(broker, queue, files):
        # When: the client submits, gets the id at once, polls, downloads
        submitted = await submit(api, params)
        final = await poll(api, submitted.json()["id"])
        document = await api.get(f"/api/v1/reports/{submitted.json()['id']}/download")

    # Then: 202 with exactly the id and RUNNING
    assert submitted.status_code == 202
    assert submitted.json() == {"id": reports.report_id(params, "csv"), "status": "RUNNING"}
    # the status: the seed's SUCCESS, one attempt, both times, no error
    assert set(final) == {"id", "status", "attempts", "format", "created_at", "finished_at"}
    assert (final["status"], final["attempts"], final["format"]) == ("SUCCESS", 1, "csv")
    assert final["created_at"] <= final["finished_at"]
    # the document: CSV, named after the report, every north row of the search
    assert document.status_code == 200
    assert document.headers["content-type"] == "text/csv; charset=utf-8"
    name = submitted.json()["id"].replace(":", "-") + ".csv"
    assert document.headers["content-disposition"] == f'attachment; filename="{name}"'
    rows = list(csv.reader(io.StringIO(document.text)))
    expected = [r for page in range(3) for r in reports.search(params, page)]
    assert rows[0] == list(reports.COLUMNS)
    assert [int(r[0]) for r in rows[1:]] == [r[0] for r in expected]
    assert all(r[1] == "north" for r in rows[1:])


async def test_an_identical_request_returns_the_same_id_running_then_finished(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given: a request queued while no worker runs
    params = {"rows": 10}
    first = await submit(api, params)

    # When: the same request again (keys in another order), then once the report is done
    again = await api.post(
        "/api/v1/reports", json={"format": "csv", "params": dict(params)}, headers=JSON
    )
    async with worker(broker, queue, files):
        await poll(api, first.json()["id"])
    after = await submit(api, params)

    # Then: one report, one message; 202 RUNNING while it ran, 200 SUCCESS after
    assert (first.status_code, again.status_code, after.status_code) == (202, 202, 200)
    assert again.json() == first.json() == {"id": first.json()["id"], "status": "RUNNING"}
    assert after.json() == {"id": first.json()["id"], "status": "SUCCESS"}
    chain = await tracker.TaskTracker.find_retry_chain(first.json()["id"])
    assert [e.status.value for e in chain] == ["completed"]
    assert await broker.depth(queue) == 0


async def test_download_is_409_while_the_report_runs(
    api: httpx.AsyncClient, queue: str, broker: Broker
) -> None:
    # Given: a report queued, no worker yet
    submitted = await submit(api, {"rows": 10})

    # When
    response = await api.get(f"/api/v1/reports/{submitted.json()['id']}/download")

    # Then
    assert response.status_code == 409
    assert response.json() == {"error": "the report is still running: poll its status"}
    assert await broker.depth(queue) == 1


async def test_a_failing_report_shows_fail_with_its_message(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given: the pricing partner is down for every attempt (one retry)
    async with worker(broker, queue, files, max_retries=1):
        # When
        submitted = await submit(api, {"rows": 10, "simulate": "partner_down"})
        final = await poll(api, submitted.json()["id"])
        download = await api.get(f"/api/v1/reports/{submitted.json()['id']}/download")

    # Then: FAIL with the error, after both attempts; no document
    assert final["status"] == "FAIL"
    assert final["error"] == "pricing partner answered 503 Service Unavailable"
    assert final["attempts"] == 2
    assert "finished_at" in final
    assert download.status_code == 409
    assert download.json()["error"].startswith("the report failed: pricing partner")


async def test_a_report_past_its_timeout_fails_with_make_report_timeout(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given: a search that hangs for 30 s under a 0.5 s timeout, no retry
    async with worker(broker, queue, files, timeout=0.5, max_retries=0):
        # When
        submitted = await submit(api, {"rows": 10, "simulate": "slow", "seconds": 30})
        final = await poll(api, submitted.json()["id"])

    # Then: the seed's timeout failure
    assert (final["status"], final["error"], final["attempts"]) == (
        "FAIL",
        "make report timeout",
        1,
    )
    assert not files.parts(submitted.json()["id"], "x").parent.exists()  # nothing written


async def test_a_transient_failure_is_retried_and_succeeds(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given / When: the search index times out on the first attempt only
    async with worker(broker, queue, files, max_retries=1):
        submitted = await submit(api, {"rows": 10, "simulate": "flaky"}, "txt")
        final = await poll(api, submitted.json()["id"])
        document = await api.get(f"/api/v1/reports/{submitted.json()['id']}/download")

    # Then: two attempts, a text document
    assert (final["status"], final["attempts"], final["format"]) == ("SUCCESS", 2, "txt")
    assert document.headers["content-type"] == "text/plain; charset=utf-8"
    assert document.text.splitlines()[0].split() == list(reports.COLUMNS)
    assert len(document.text.splitlines()) == 11


async def test_a_pdf_report_is_one_document_of_numbered_pages_with_the_rows(
    api: httpx.AsyncClient, broker: Broker, queue: str, files: ReportFiles
) -> None:
    # Given: 1,000 rows, two search pages, so two parts merged
    params = {"rows": 1000, "seed": 3}
    async with worker(broker, queue, files):
        # When
        submitted = await submit(api, params, "pdf")
        final = await poll(api, submitted.json()["id"], within=120)
        document = await api.get(f"/api/v1/reports/{submitted.json()['id']}/download")

    # Then: a PDF a reader opens: 20 pages (10 per 500-row part), each with the header and
    # its number out of 20, the first and last rows in their cells
    assert final["status"] == "SUCCESS", final
    assert document.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(document.content))
    assert len(reader.pages) == 20
    texts = [page.extract_text() for page in reader.pages]
    for number, text in enumerate(texts, start=1):
        assert " ".join(reports.COLUMNS) in text
        assert re.findall(r"Page \d+ of \d+", text) == [f"Page {number} of 20"]
    first, last = reports.search(params, 0)[0], reports.search(params, 1)[-1]
    assert f"0 {first[1]} {first[2]} {first[3]} {first[4]:.2f}" in texts[0]
    assert f"999 {last[1]} {last[2]} {last[3]} {last[4]:.2f}" in texts[-1]
    # and only the document is left in the report's folder
    folder = files.folder(submitted.json()["id"])
    assert [p.suffix for p in folder.iterdir()] == [".pdf"]


async def test_an_invalid_request_is_400_with_the_reason_and_enqueues_nothing(
    api: httpx.AsyncClient, broker: Broker, queue: str
) -> None:
    # Given
    bodies = [
        ({"params": {"rows": -1}, "format": "csv"}, "params.rows must be an integer"),
        ({"params": {}, "format": "xlsx"}, "format 'xlsx' is not supported"),
        ({"params": {"rows": 200_000}, "format": "pdf"}, "from 0 to 100000 for pdf"),
        ({"params": {"colour": "red"}}, "unknown parameter 'colour'"),
        ({"format": "csv"}, "needs an object 'params'"),
        ([1, 2], "needs an object 'params'"),
    ]
    for body, reason in bodies:
        # When
        response = await api.post("/api/v1/reports", json=body, headers=JSON)
        # Then
        assert response.status_code == 400, body
        assert reason in response.json()["error"]
    assert await broker.depth(queue) == 0
    assert await tracker.TaskTracker.find_all().count() == 0
