from __future__ import annotations

import csv
from pathlib import Path

import pytest

import tracker
from consumers import reports
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
        ({"params": {"rows": -1}}, "params.rows must be an integer"),
    ],
)
def test_bad_requests_are_validation_errors(payload: dict[str, object], error: str) -> None:
    with pytest.raises(tracker.ValidationError, match=error):
        reports.Request.parse(payload)


def consumer(queue: str, timeout: float = 60) -> tracker.TrackedConsumer:
    return tracker.tracked(
        queue,
        max_retries=1,
        retry_policy=FAST,
        timeout=timeout,
        timeout_message=reports.make_report.timeout_message,
    )(reports.make_report.handler)


@pytest.mark.rabbitmq
async def test_a_large_report_is_built_in_pages_and_merged(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given
    monkeypatch.setenv("REPORTS_OUTPUT_DIR", str(tmp_path))
    queue = await broker.new_queue()
    params = {"rows": 1800, "seed": 3}
    async with tracker.Worker([consumer(queue)], broker.url), tracker.Publisher(broker.url) as pub:
        # When: a client submits, gets the id at once, and polls
        first = await reports.submit(pub, params, queue=queue)
        again = await reports.submit(pub, dict(params), queue=queue)
        await wait_status(first.task_id, "completed")
        after = await reports.submit(pub, params, queue=queue)
    # Then: one report for the three identical requests, in four pages merged into one file
    assert again.deduplicated
    assert after.deduplicated
    assert after.execution_id == first.execution_id
    state = await reports.status(first.task_id)
    assert state["status"] == "completed"
    path = Path(state["path"])
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == list(reports.COLUMNS)
    assert len(rows) == 1 + 1800
    assert [int(r[0]) for r in rows[1:]] == list(range(1800))
    assert list(path.parent.iterdir()) == [path]  # the parts were merged and removed
    execution = await tracker.TaskTracker.find_execution(first.execution_id)
    assert execution is not None
    assert execution.result == {"path": str(path), "pages": 4, "format": "csv"}


@pytest.mark.rabbitmq
async def test_a_report_past_its_timeout_fails_with_make_report_timeout(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPORTS_OUTPUT_DIR", str(tmp_path))
    queue = await broker.new_queue()
    async with (
        tracker.Worker([consumer(queue, timeout=0.5)], broker.url, lease=3),
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
