from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from fastapi import APIRouter

import tracker
from consumers import reports
from consumers.report_files import ReportFiles
from tests.rabbit import FAST, Broker, wait_status

pytestmark = [pytest.mark.usefixtures("store")]


def test_the_report_id_is_a_hash_of_the_canonical_request() -> None:
    a = reports.report_id({"region": "north", "rows": 10}, "csv")
    assert a == reports.report_id({"rows": 10, "region": "north"}, "csv")
    assert a != reports.report_id({"rows": 10, "region": "north"}, "txt")
    assert a.startswith("reports:")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"format": "csv"}, "needs an object 'params'"),
        ({"params": {}, "format": "xlsx"}, "format 'xlsx' is not supported"),
        ({"params": {}, "format": ["csv"]}, "format \"['csv']\" is not supported"),
        ({"params": {"rows": -1}}, "params.rows must be an integer"),
        ({"params": {"rows": True}}, "params.rows must be an integer"),
        ({"params": {"rows": 100_001}, "format": "pdf"}, "from 0 to 100000 for pdf"),
        ({"params": {"region": "mars"}}, "params.region must be one of north"),
        ({"params": {"seed": 2.5}}, "params.seed must be an integer"),
        ({"params": {"simulate": "meteor"}}, "params.simulate must be one of"),
        ({"params": {"seconds": float("nan")}}, "params.seconds must be a number"),
        ({"params": {"$where": 1}}, "unknown parameter '$where'"),
        ({"params": {}, "colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_bad_requests_are_validation_errors(payload: dict[str, object], error: str) -> None:
    with pytest.raises(tracker.ValidationError, match=re.escape(error)):
        reports.Request.parse(payload)


def test_the_module_gives_tracker_serve_its_consumer_and_its_routes() -> None:
    # Given / When: what `tracker serve consumers.reports` loads
    [consumer] = reports.CONSUMERS
    # Then: the consumer, which releases its documents, and the routes
    assert consumer.queue == "reports"
    assert consumer.name == "make_report"
    assert consumer.timeout_message == "make report timeout"
    assert consumer.release == reports.FILES.release
    assert isinstance(reports.ROUTER, APIRouter)
    paths = {route.path for route in reports.ROUTER.routes}  # type: ignore[attr-defined]
    assert paths == {"/reports", "/reports/{report_id}", "/reports/{report_id}/download"}


async def test_submit_refuses_a_bad_request_before_anything_is_enqueued() -> None:
    class Refuse:
        async def enqueue(self, *args: object, **kwargs: object) -> tracker.EnqueueResult:
            raise AssertionError("nothing is enqueued for a bad request")

    with pytest.raises(tracker.ValidationError, match="format 'doc'"):
        await reports.submit(Refuse(), {"rows": 1}, fmt="doc")


def consumer(queue: str, files: ReportFiles, timeout: float = 60) -> tracker.TrackedConsumer:
    return reports.consumer(queue, files, max_retries=1, retry_policy=FAST, timeout=timeout)


@pytest.mark.rabbitmq
async def test_a_large_report_is_built_in_pages_and_merged(broker: Broker, tmp_path: Path) -> None:
    # Given
    files = ReportFiles(tmp_path)
    queue = await broker.new_queue()
    params = {"rows": 1800, "seed": 3}
    async with (
        tracker.Worker([consumer(queue, files)], broker.url),
        tracker.Publisher(broker.url) as pub,
    ):
        # When: a client submits, gets the id at once, and polls
        first = await reports.submit(pub, params, queue=queue)
        again = await reports.submit(pub, dict(params), queue=queue)
        await wait_status(first.task_id, "completed")
        after = await reports.submit(pub, params, queue=queue)
    # Then: one report for the three identical requests, in four pages merged into one file
    assert again.deduplicated
    assert after.deduplicated
    assert after.execution_id == first.execution_id
    state = await reports.status(first.task_id, queue)
    assert state is not None
    assert state["status"] == "SUCCESS"
    path = files.document(first.task_id, first.execution_id, "csv")
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == list(reports.COLUMNS)
    assert len(rows) == 1 + 1800
    assert [int(r[0]) for r in rows[1:]] == list(range(1800))
    assert list(path.parent.iterdir()) == [path]  # the parts were merged and removed
    execution = await tracker.TaskTracker.find_execution(first.execution_id)
    assert execution is not None
    assert execution.result == {"path": str(path), "pages": 4, "format": "csv"}


@pytest.mark.rabbitmq
async def test_a_report_past_its_timeout_is_retried_and_leaves_no_parts(
    broker: Broker, tmp_path: Path
) -> None:
    files = ReportFiles(tmp_path)
    queue = await broker.new_queue()
    async with (
        tracker.Worker([consumer(queue, files, timeout=0.5)], broker.url, lease=3),
        tracker.Publisher(broker.url) as pub,
    ):
        submitted = await reports.submit(
            pub, {"rows": 10, "simulate": "slow", "seconds": 30}, queue=queue
        )
        chain = await wait_status(submitted.task_id, "completed")
    assert [(d.status.value, d.error_message) for d in chain] == [
        ("failed", "make report timeout"),
        ("completed", None),
    ]
    folder = files.folder(submitted.task_id)
    assert [p.name for p in folder.iterdir()] == [f"{chain[-1].execution_id}.csv"]


async def test_status_is_none_for_a_report_never_requested_or_of_another_queue() -> None:
    # Given: a task of the same id on another queue
    task_id = reports.report_id({"rows": 1}, "csv")
    await tracker.create_execution(task_id, "orders", {"params": {"rows": 1}})
    # When / Then
    assert await reports.status(task_id) is None
    assert await reports.status(reports.report_id({"rows": 2}, "csv")) is None
