"""The HTTP API under /api/v1: every endpoint, its JSON shape, its permission rule, and
hostile input everywhere (ids, query strings, cursors, bodies, content types)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.console_data import HOSTILE, dead_letter
from tests.rabbit import Broker
from tracker.api_tokens import ApiToken
from tracker.web.access import Access
from tracker.web.api.schemas import ReplayChoice
from tracker.web.app import create_app
from tracker.web.context import Operator
from tracker.web.health import Health

VIEWER = ApiToken("vera", "viewer", "v" * 24)
OPERATOR = ApiToken("otto", "operator", "o" * 24)
AS_VIEWER = {"authorization": f"Bearer {VIEWER.token}"}
AS_OPERATOR = {"authorization": f"Bearer {OPERATOR.token}"}
QUEUE = "orders"


def app(tokens: tuple[ApiToken, ...] = (VIEWER, OPERATOR), host: str = "0.0.0.0") -> Any:
    operator = Operator(Access(tokens, host), frozenset({"card"}))
    return create_app(CollectorRegistry(), Health(), operator=operator)


@pytest.fixture
async def api(store: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://console:9464") as http:
        yield http


@pytest.fixture
async def failed(store: str) -> list[str]:
    """Two dead letters in one group and one, with hostile text, in another."""
    first = await dead_letter(QUEUE, "orders:1")
    await dead_letter(QUEUE, "orders:2")
    await dead_letter(QUEUE, "orders:3", message=HOSTILE, payload={"note": HOSTILE})
    assert first.group_id is not None
    return [first.group_id]


# --- reading --------------------------------------------------------------------------------


@pytest.mark.usefixtures("failed")
async def test_queues_lists_counts_per_status(api: httpx.AsyncClient) -> None:
    # When
    response = await api.get("/api/v1/queues", headers=AS_VIEWER)
    # Then
    body = response.json()
    assert response.status_code == 200
    assert body["next_cursor"] is None
    [queue] = body["items"]
    assert queue["name"] == QUEUE
    assert queue["counts"]["dlq"] == 3
    assert queue["failing_groups"] == 2


async def test_tasks_search_pages_with_a_cursor(api: httpx.AsyncClient, failed: list[str]) -> None:
    # When
    first = await api.get("/api/v1/tasks", params={"queue": QUEUE, "limit": 2}, headers=AS_VIEWER)
    cursor = first.json()["next_cursor"]
    second = await api.get(
        "/api/v1/tasks", params={"queue": QUEUE, "limit": 2, "cursor": cursor}, headers=AS_VIEWER
    )
    # Then: three executions over two pages, none twice, snake_case keys
    items = first.json()["items"] + second.json()["items"]
    assert sorted(i["task_id"] for i in items) == ["orders:1", "orders:2", "orders:3"]
    assert second.json()["next_cursor"] is None
    assert {"task_id", "execution_id", "queue", "status", "error_message"} <= items[0].keys()
    assert not any(key != key.lower() for key in items[0])


async def test_a_task_timeline_has_every_attempt_with_payload_redacted(
    api: httpx.AsyncClient, failed: list[str]
) -> None:
    # When
    response = await api.get("/api/v1/tasks/orders:1", headers=AS_VIEWER)
    # Then
    body = response.json()
    assert body["task_id"] == "orders:1"
    [attempt] = body["executions"]
    assert attempt["status"] == "dlq"
    assert attempt["payload"] == {"order": 17, "card": "[redacted]"}
    assert [h["status"] for h in attempt["history"]] == ["queued", "dlq"]
    assert attempt["error_message"] == "partner refused order 17"


async def test_every_time_is_written_in_one_width_even_at_a_whole_second(
    api: httpx.AsyncClient, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a dead letter and its group recorded at a whole second
    with monkeypatch.context() as clock:
        clock.setattr(time, "time_ns", lambda: 1_795_990_169 * 10**9)
        dead = await dead_letter(QUEUE, "orders:1")

    # When
    task = await api.get("/api/v1/tasks/orders:1", headers=AS_VIEWER)
    group = await api.get(f"/api/v1/failure-groups/{dead.group_id}", headers=AS_VIEWER)

    # Then: milliseconds and Z, never pydantic's fractionless form that sorts after the others
    times = list(_times(task.json())) + list(_times(group.json()))
    assert {"enqueued_at", "failed_at", "updated_at", "at", "first_seen", "last_seen"} <= {
        key for key, _ in times
    }
    assert {value for _, value in times if value is not None} == {"2026-11-29T22:09:29.000Z"}


def _times(body: Any) -> Any:
    """(key, value) of every time in a JSON body: keys ending in ``_at`` or ``_seen``, or ``at``."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "at" or key.endswith(("_at", "_seen")):
                yield key, value
            else:
                yield from _times(value)
    elif isinstance(body, list):
        for item in body:
            yield from _times(item)


async def test_an_unknown_task_is_404(api: httpx.AsyncClient, store: str) -> None:
    response = await api.get("/api/v1/tasks/nothing-here", headers=AS_VIEWER)
    assert response.status_code == 404
    assert "nothing-here" in response.json()["error"]


async def test_failure_groups_list_each_with_id_state_and_count(
    api: httpx.AsyncClient, failed: list[str]
) -> None:
    # When
    response = await api.get("/api/v1/failure-groups", headers=AS_VIEWER)
    one = await api.get(f"/api/v1/failure-groups/{failed[0]}", headers=AS_VIEWER)
    # Then
    items = response.json()["items"]
    assert sorted(g["count"] for g in items) == [1, 2]
    assert {g["state"] for g in items} == {"open"}
    assert one.json()["id"] == failed[0]
    assert one.json()["count"] == 2


async def test_an_unknown_group_is_404(api: httpx.AsyncClient, store: str) -> None:
    response = await api.get("/api/v1/failure-groups/0123456789abcdef", headers=AS_VIEWER)
    assert response.status_code == 404


# --- acting ---------------------------------------------------------------------------------


async def test_a_group_is_muted_unmuted_and_resolved_and_each_is_audited(
    api: httpx.AsyncClient, failed: list[str]
) -> None:
    # Given
    group = failed[0]
    # When
    muted = await api.post(f"/api/v1/failure-groups/{group}/mute", headers=AS_OPERATOR)
    unmuted = await api.post(
        f"/api/v1/failure-groups/{group}/unmute", json={"reason": "fixed"}, headers=AS_OPERATOR
    )
    resolved = await api.post(f"/api/v1/failure-groups/{group}/resolve", headers=AS_OPERATOR)
    again = await api.post(f"/api/v1/failure-groups/{group}/resolve", headers=AS_OPERATOR)
    # Then
    assert muted.json()["muted"] is True
    assert unmuted.json()["muted"] is False
    assert resolved.json()["state"] == "resolved"
    assert again.status_code == 409
    audit = (
        await api.get("/api/v1/audit", params={"target": f"group:{group}"}, headers=AS_VIEWER)
    ).json()
    actions = [(e["action"], e["actor"], e["via"]) for e in audit["items"]]
    assert ("group.mute", "otto", "api") in actions
    assert ("group.resolve", "otto", "api") in actions


async def test_a_replay_dry_run_counts_and_changes_nothing(
    api: httpx.AsyncClient, failed: list[str]
) -> None:
    # When
    body = {"group_id": failed[0], "dry_run": True, "reason": "partner back"}
    created = await api.post("/api/v1/replays", json=body, headers=AS_OPERATOR)
    # Then
    assert created.status_code == 201
    job = created.json()
    assert (job["matched"], job["republished"], job["dry_run"]) == (2, 0, True)
    fetched = await api.get(f"/api/v1/replays/{job['id']}", headers=AS_VIEWER)
    assert fetched.json()["state"] in ("completed",)
    listed = await api.get("/api/v1/replays", headers=AS_VIEWER)
    assert [j["id"] for j in listed.json()["items"]] == [job["id"]]
    items = await api.get(f"/api/v1/replays/{job['id']}/items", headers=AS_VIEWER)
    assert items.json() == {"items": [], "next_cursor": None}


async def test_a_replay_is_paused_resumed_and_cancelled(
    api: httpx.AsyncClient, failed: list[str]
) -> None:
    # Given: a replay no service runs here, so it stays pending
    body = {"group_id": failed[0], "reason": "partner back", "rate_per_second": 1}
    job = (await api.post("/api/v1/replays", json=body, headers=AS_OPERATOR)).json()
    # When
    paused = await api.post(f"/api/v1/replays/{job['id']}/pause", headers=AS_OPERATOR)
    resumed = await api.post(f"/api/v1/replays/{job['id']}/resume", headers=AS_OPERATOR)
    cancelled = await api.post(f"/api/v1/replays/{job['id']}/cancel", headers=AS_OPERATOR)
    late = await api.post(f"/api/v1/replays/{job['id']}/pause", headers=AS_OPERATOR)
    # Then
    assert paused.json()["state"] == "paused"
    assert resumed.json()["state"] in ("pending", "running")
    assert cancelled.json()["state"] == "cancelled"
    assert late.status_code == 409


async def test_a_replay_needs_a_reason(api: httpx.AsyncClient, failed: list[str]) -> None:
    body = {"group_id": failed[0], "dry_run": True}
    response = await api.post("/api/v1/replays", json=body, headers=AS_OPERATOR)
    assert response.status_code == 400
    assert "reason" in response.json()["error"]


async def test_enqueue_without_a_publisher_is_503_and_writes_nothing(
    api: httpx.AsyncClient, store: str
) -> None:
    # Given: this app has no broker connection
    body = {"queue": QUEUE, "payload": {"n": 1}, "task_id": "orders:new"}
    # When
    response = await api.post("/api/v1/tasks", json=body, headers=AS_OPERATOR)
    # Then
    assert response.status_code == 503
    missing = await api.get("/api/v1/tasks/orders:new", headers=AS_VIEWER)
    assert missing.status_code == 404


# --- permissions ----------------------------------------------------------------------------

READS = [
    "/api/v1/queues",
    "/api/v1/tasks",
    "/api/v1/tasks/orders:1",
    "/api/v1/failure-groups",
    "/api/v1/replays",
    "/api/v1/audit",
]
ACTS = [
    ("/api/v1/tasks", {"queue": QUEUE, "payload": {}}),
    ("/api/v1/failure-groups/0123456789abcdef/mute", None),
    ("/api/v1/failure-groups/0123456789abcdef/unmute", None),
    ("/api/v1/failure-groups/0123456789abcdef/resolve", None),
    ("/api/v1/replays", {"group_id": "0123456789abcdef", "reason": "r", "dry_run": True}),
    ("/api/v1/replays/x/pause", None),
    ("/api/v1/replays/x/resume", None),
    ("/api/v1/replays/x/cancel", None),
    ("/api/v1/executions/x/retry", {"payload": {}, "reason": "r"}),
]


@pytest.mark.usefixtures("failed")
async def test_every_read_needs_a_token(api: httpx.AsyncClient) -> None:
    for path in READS:
        anonymous = await api.get(path)
        wrong = await api.get(path, headers={"authorization": "Bearer " + "w" * 30})
        viewer = await api.get(path, headers=AS_VIEWER)
        assert (anonymous.status_code, wrong.status_code, viewer.status_code) == (401, 401, 200)


async def test_every_action_needs_the_operator_role(api: httpx.AsyncClient, store: str) -> None:
    for path, body in ACTS:
        anonymous = await api.post(path, json=body)
        viewer = await api.post(path, json=body, headers=AS_VIEWER)
        assert (anonymous.status_code, viewer.status_code) == (401, 403), path


async def test_without_tokens_off_loopback_the_api_is_off_but_health_answers(
    store: str,
) -> None:
    # Given: no tokens, bound to every interface
    transport = httpx.ASGITransport(app=app(tokens=(), host="0.0.0.0"))
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as http:
        # When
        api = await http.get("/api/v1/queues")
        page = await http.get("/", headers={"accept": "text/html"})
        live = await http.get("/livez")
        metrics = await http.get("/metrics")
    # Then
    assert api.status_code == page.status_code == 403
    assert "TRACKER_API_TOKENS" in api.json()["error"]
    assert "TRACKER_API_TOKENS" in page.text
    assert (live.status_code, metrics.status_code) == (200, 200)


async def test_the_openapi_document_describes_the_endpoints(api: httpx.AsyncClient) -> None:
    # When
    document = (await api.get("/api/v1/openapi.json")).json()
    # Then
    paths = document["paths"]
    for path in (
        "/api/v1/tasks",
        "/api/v1/queues",
        "/api/v1/tasks/{task_id}",
        "/api/v1/failure-groups",
        "/api/v1/failure-groups/{group_id}/{action}",
        "/api/v1/replays",
        "/api/v1/replays/{replay_id}",
        "/api/v1/replays/{replay_id}/{action}",
        "/api/v1/audit",
    ):
        assert path in paths, path
    # and bad input as the 400 the API answers, never FastAPI's 422
    responses = [r for ops in paths.values() for op in ops.values() for r in op["responses"]]
    assert "400" in responses
    assert "422" not in responses


# --- hostile input --------------------------------------------------------------------------


async def test_wrong_content_types_and_bodies_are_400_without_a_trace(
    api: httpx.AsyncClient, store: str
) -> None:
    cases = [
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b'{"group_id": "x"}', "headers": {"content-type": "text/plain"}},
        {
            "content": b"group_id=x&reason=y",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
        {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
        {
            "content": json.dumps({"reason": "r", "group_id": {"$ne": 1}}).encode(),
            "headers": {"content-type": "application/json"},
        },
        {
            "content": json.dumps({"reason": "r", "extra": 1}).encode(),
            "headers": {"content-type": "application/json"},
        },
    ]
    for case in cases:
        headers = {**AS_OPERATOR, **case["headers"]}
        response = await api.post("/api/v1/replays", content=case["content"], headers=headers)
        assert response.status_code == 400, case
        assert "Traceback" not in response.text
        assert response.json()["error"]


async def test_an_oversize_body_is_413(api: httpx.AsyncClient) -> None:
    body = b'{"queue": "q", "payload": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = await api.post(
        "/api/v1/tasks", content=body, headers={**AS_OPERATOR, "content-type": "application/json"}
    )
    assert response.status_code == 413


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.text(max_size=700),
    name=st.sampled_from(
        [
            "task_id",
            "queue",
            "group_id",
            "cursor",
            "status",
            "since",
            "limit",
            "metadata",
            "category",
        ]
    ),
)
async def test_any_query_string_is_answered_without_a_server_error(
    api: httpx.AsyncClient, value: str, name: str
) -> None:
    response = await api.get("/api/v1/tasks", params={name: value}, headers=AS_VIEWER)
    assert response.status_code in (200, 400), response.text
    assert "Traceback" not in response.text


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=600).filter(lambda s: s not in (".", "..")))
async def test_any_id_in_a_path_is_answered_without_a_server_error(
    api: httpx.AsyncClient, value: str
) -> None:
    from urllib.parse import quote

    quoted = quote(value, safe="")
    for path in (
        f"/api/v1/tasks/{quoted}",
        f"/api/v1/failure-groups/{quoted}",
        f"/api/v1/replays/{quoted}",
        f"/api/v1/replays/{quoted}/items",
        f"/api/v1/audit?target={quoted}",
    ):
        response = await api.get(path, headers=AS_VIEWER)
        # An id with a "/" decodes to another path: 307 (a trailing slash, redirected
        # without it), 405 (it reads as an action, which is a POST).
        assert response.status_code in (200, 307, 400, 404, 405), (path, response.text)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    )
)
async def test_any_json_body_is_answered_without_a_server_error(
    api: httpx.AsyncClient, body: Any
) -> None:
    content = json.dumps(body).encode()
    for path in ("/api/v1/replays", "/api/v1/failure-groups/0123456789abcdef/mute"):
        response = await api.post(
            path, content=content, headers={**AS_OPERATOR, "content-type": "application/json"}
        )
        assert response.status_code in (201, 400, 404, 409), (path, response.text)


@pytest.mark.rabbitmq
async def test_enqueue_publishes_through_the_services_transport_and_is_audited(
    store: str, broker: Broker
) -> None:
    # Given: the API of a process whose transport is open
    from tracker.rabbit.aio_transport import AioPikaTransport

    queue = await broker.new_queue()
    transport = AioPikaTransport(broker.url)
    await transport.open()
    operator = Operator(Access((OPERATOR,), "0.0.0.0"), frozenset({"card"}), transport=transport)
    web = create_app(CollectorRegistry(), Health(), operator=operator)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="http://console"
        ) as http:
            body = {"queue": queue, "payload": {"card": "4111"}, "task_id": "t-1"}
            # When: the same task twice
            first = await http.post("/api/v1/tasks", json=body, headers=AS_OPERATOR)
            second = await http.post("/api/v1/tasks", json=body, headers=AS_OPERATOR)
            audit = await http.get(
                "/api/v1/audit", params={"action": "enqueue"}, headers=AS_OPERATOR
            )
    finally:
        await transport.close()
    # Then: one message on the queue, the second deduplicated, both audited under the name
    assert first.status_code == second.status_code == 201
    assert first.json()["deduplicated"] is False
    assert second.json() == {**first.json(), "deduplicated": True}
    assert await broker.depth(queue) == 1
    entries = audit.json()["items"]
    assert [(e["actor"], e["target"]) for e in entries] == [("otto", "t-1"), ("otto", "t-1")]
    assert "4111" not in audit.text


@pytest.mark.rabbitmq
async def test_edit_and_retry_keeps_redacted_fields_and_is_audited(
    store: str, broker: Broker
) -> None:
    # Given: a dead letter whose card number the API shows redacted
    from tracker.rabbit.aio_transport import AioPikaTransport

    queue = await broker.new_queue()
    dead = await dead_letter(queue, "orders:9")
    transport = AioPikaTransport(broker.url)
    await transport.open()
    operator = Operator(Access((OPERATOR,), "0.0.0.0"), frozenset({"card"}), transport=transport)
    web = create_app(CollectorRegistry(), Health(), operator=operator)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="http://console"
        ) as http:
            shown = (await http.get("/api/v1/tasks/orders:9", headers=AS_OPERATOR)).json()
            payload = {**shown["executions"][0]["payload"], "order": 18}
            # When: the payload edited, the redacted card left as shown
            retried = await http.post(
                f"/api/v1/executions/{dead.execution_id}/retry",
                json={"payload": payload, "reason": "order number fixed"},
                headers=AS_OPERATOR,
            )
            again = await http.post(
                f"/api/v1/executions/{dead.execution_id}/retry",
                json={"payload": payload, "reason": "twice"},
                headers=AS_OPERATOR,
            )
            audit = await http.get(
                "/api/v1/audit", params={"action": "edit_retry"}, headers=AS_OPERATOR
            )
    finally:
        await transport.close()
    # Then: a new execution linked to the dead letter, with the stored card, published once
    from tracker.models import TaskTracker

    assert retried.status_code == 201, retried.text
    created = retried.json()
    assert created["source_execution_id"] == dead.execution_id
    assert created["payload"] == {"order": 18, "card": "[redacted]"}
    stored = await TaskTracker.find_one({"executionId": created["execution_id"]})
    assert stored is not None
    assert stored.payload == {"order": 18, "card": "4111-1111-1111-1111"}
    assert again.status_code == 409
    assert await broker.depth(queue) == 1
    assert "4111" not in audit.text
    assert [e["actor"] for e in audit.json()["items"]][-1:] == ["otto"]


async def test_an_execution_id_with_slashes_is_reached_escaped_or_not(
    api: httpx.AsyncClient, store: str
) -> None:
    # Given: a producer's message id with slashes became the execution id
    dead = await dead_letter("orders", "orders:slashed")
    dead.execution_id = "orders/2026/11/1"
    await dead.save()
    # When: asked for as the command line escapes it, and as written
    escaped = await api.get("/api/v1/executions/orders%2F2026%2F11%2F1", headers=AS_VIEWER)
    plain = await api.get("/api/v1/executions/orders/2026/11/1", headers=AS_VIEWER)
    # Then
    assert escaped.status_code == plain.status_code == 200, escaped.text
    assert escaped.json()["execution_id"] == plain.json()["execution_id"] == "orders/2026/11/1"


def test_a_routers_own_422_stays_in_the_openapi_document() -> None:
    # Given: a consumer module's route that declares a 422 of its own
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/mine", responses={422: {"description": "refused for a reason of my own"}})
    async def mine(n: int) -> dict[str, int]:
        return {"n": n}

    operator = Operator(Access((VIEWER, OPERATOR), "0.0.0.0"))
    web = create_app(CollectorRegistry(), Health(), operator=operator, api_routers=[router])
    # When
    document = web.openapi()
    # Then: its own 422 kept; FastAPI's generated one replaced by the 400 the API answers
    responses = document["paths"]["/api/v1/mine"]["post"]["responses"]
    assert responses["422"]["description"] == "refused for a reason of my own"
    assert "400" in responses


def test_a_replays_time_range_is_sent_on_as_asked() -> None:
    # The remote CLI sends a replay's choice as JSON: its bounds keep their microseconds, as
    # the direct backend's do, while the times the API writes back have one width.
    since = datetime(2026, 11, 29, 10, 0, 0, 500, tzinfo=UTC)
    choice = ReplayChoice(queue=QUEUE, since=since)
    assert choice.model_dump(mode="json")["since"] == "2026-11-29T10:00:00.000500Z"
    assert ReplayChoice.model_validate(choice.model_dump(mode="json")).since == since
