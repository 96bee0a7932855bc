"""Who may use the report routes (the API's rules: a viewer reads, an operator submits;
without tokens, loopback only), and hostile requests: any body is answered 202, 200 or 400,
and nothing is enqueued unless it is a valid request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import reports
from consumers.report_files import ReportFiles
from consumers.report_request import Request
from tests.report_helpers import (
    AS_OPERATOR,
    AS_VIEWER,
    JSON,
    OPERATOR,
    VIEWER,
    RecordingTransport,
    finished_report,
    report_api_client,
)
from tracker import ValidationError
from tracker.models import TaskTracker
from tracker.store import connection

pytestmark = pytest.mark.usefixtures("store")
QUEUE = reports.QUEUE
TOKENS = (VIEWER, OPERATOR)
BODY = {"params": {"rows": 10}, "format": "csv"}


@pytest.fixture
def files(tmp_path: Path) -> ReportFiles:
    return ReportFiles(tmp_path / "reports")


async def test_with_tokens_a_viewer_reads_and_an_operator_submits(files: ReportFiles) -> None:
    # Given: a finished report, and the API with tokens on every interface
    done = await finished_report(files, {"rows": 10})
    transport = RecordingTransport()
    async with report_api_client(
        QUEUE, files, transport, tokens=TOKENS, host="0.0.0.0", base_url="http://tracker:9464"
    ) as api:
        url = f"/api/v1/reports/{done.task_id}"
        # When
        anonymous = [
            await api.get(url),
            await api.get(f"{url}/download"),
            await api.post("/api/v1/reports", json=BODY),
        ]
        viewer = [
            await api.get(url, headers=AS_VIEWER),
            await api.get(f"{url}/download", headers=AS_VIEWER),
            await api.post("/api/v1/reports", json=BODY, headers=AS_VIEWER),
        ]
        other = {"params": {"rows": 20}}
        operator = await api.post("/api/v1/reports", json=other, headers=AS_OPERATOR)
        bad_token = await api.get(url, headers={"authorization": "Bearer " + "x" * 24})

    # Then: no token 401; a viewer reads (200) and downloads but may not submit (403)
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert [r.status_code for r in viewer] == [200, 200, 403]
    assert viewer[2].json()["error"] == "'vera' is a viewer: this needs the operator role"
    assert bad_token.status_code == 401
    # an operator submits, published on the service's transport
    assert operator.status_code == 202
    assert [m.routing_key for m in transport.published] == [QUEUE]


async def test_without_tokens_the_routes_answer_on_a_loopback_bind_only(
    files: ReportFiles,
) -> None:
    # Given
    transport = RecordingTransport()
    async with report_api_client(QUEUE, files, transport) as local:
        # When
        submitted = await local.post("/api/v1/reports", json=BODY, headers=JSON)
    async with report_api_client(
        QUEUE, files, transport, host="0.0.0.0", base_url="http://10.1.2.3:9464"
    ) as exposed:
        refused = [
            await exposed.get(f"/api/v1/reports/{submitted.json()['id']}"),
            await exposed.post("/api/v1/reports", json=BODY, headers=JSON),
        ]

    # Then
    assert submitted.status_code == 202
    assert [r.status_code for r in refused] == [403, 403]
    assert "TRACKER_API_TOKENS" in refused[0].json()["error"]
    assert len(transport.published) == 1


async def test_a_cross_site_submission_is_refused(files: ReportFiles) -> None:
    # Given
    transport = RecordingTransport()
    async with report_api_client(QUEUE, files, transport) as api:
        # When
        response = await api.post(
            "/api/v1/reports", json=BODY, headers={**JSON, "origin": "https://evil.example"}
        )
    # Then
    assert response.status_code == 403
    assert transport.published == []


async def test_a_body_that_is_not_json_is_400(files: ReportFiles) -> None:
    # Given
    transport = RecordingTransport()
    cases = [
        (b"{", JSON, "not valid JSON"),
        (b"\xff\xfe", JSON, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, "not valid JSON"),
        (b'{"params": {"rows": 1' + b"0" * 5000 + b"}}", JSON, "not valid JSON"),
        (json.dumps(BODY).encode(), {"content-type": "text/plain"}, "content-type"),
    ]
    async with report_api_client(QUEUE, files, transport) as api:
        for content, headers, reason in cases:
            # When
            response = await api.post("/api/v1/reports", content=content, headers=headers)
            # Then
            assert response.status_code == 400, content[:40]
            assert reason in response.json()["error"]
    assert transport.published == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
PARAMS = st.dictionaries(
    st.sampled_from(["region", "rows", "seed", "simulate", "seconds", "colour", "$where", "a.b"]),
    JSON_VALUES | st.sampled_from(["north", "east", "flaky", "slow"]) | st.integers(-5, 2_000_000),
    max_size=5,
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"params": PARAMS},
        optional={
            "format": st.sampled_from(["csv", "pdf", "txt", "xlsx", "", "CSV"]) | JSON_VALUES
        },
    ),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
async def test_any_body_is_202_200_or_400_and_only_a_valid_one_is_enqueued(
    files: ReportFiles, body: Any
) -> None:
    # Given
    await connection.collection().delete_many({})
    transport = RecordingTransport()
    try:
        expected: Request | None = Request.parse(body)
    except ValidationError:
        expected = None

    # When
    async with report_api_client(QUEUE, files, transport) as api:
        response = await api.post(
            "/api/v1/reports", content=json.dumps(body).encode(), headers=JSON
        )

    # Then: a valid request is enqueued once under its id; anything else is a 400 with a
    # reason, and nothing is written or published
    stored = await TaskTracker.find_all().to_list()
    if expected is None:
        assert response.status_code == 400, response.text
        assert response.json()["error"]
        assert stored == []
        assert transport.published == []
    else:
        assert response.status_code == 202, response.text
        assert response.json() == {"id": expected.id, "status": "RUNNING"}
        assert [e.task_id for e in stored] == [expected.id]
        assert len(transport.published) == 1


async def test_a_report_finished_at_a_whole_second_keeps_the_fraction(
    files: ReportFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a report created and finished at a whole second
    with monkeypatch.context() as clock:
        clock.setattr(time, "time_ns", lambda: 1_795_990_169 * 10**9)
        done = await finished_report(files, {"rows": 10})

    # When
    async with report_api_client(QUEUE, files, RecordingTransport()) as api:
        status = (await api.get(f"/api/v1/reports/{done.task_id}")).json()

    # Then: milliseconds and Z, so that it sorts as text beside any other time
    assert status["created_at"] == status["finished_at"] == "2026-11-29T22:09:29.000Z"
