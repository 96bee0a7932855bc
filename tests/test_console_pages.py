"""The console's pages: each renders, needs its role, escapes whatever the database holds,
and its forms refuse cross-site posts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.console_data import HOSTILE, HUGE, dead_letter
from tests.rabbit import Broker
from tracker.api_tokens import ApiToken
from tracker.web import sessions
from tracker.web.access import Access
from tracker.web.app import create_app
from tracker.web.context import Operator
from tracker.web.health import Health

VIEWER = ApiToken("vera", "viewer", "v" * 24)
OPERATOR = ApiToken("otto", "operator", "o" * 24)
HTML = {"accept": "text/html"}


def client(tokens: tuple[ApiToken, ...] = ()) -> httpx.AsyncClient:
    operator = Operator(Access(tokens, "127.0.0.1"), frozenset({"card"}))
    app = create_app(CollectorRegistry(), Health(), operator=operator)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9464", headers=HTML)


@pytest.fixture
async def local(store: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client() as http:
        yield http


@pytest.fixture
async def hostile(store: str) -> str:
    """A dead letter whose every text is hostile; its group id."""
    doc = await dead_letter(
        "orders",
        "orders:<b>1</b>",
        message=HOSTILE + HUGE,
        payload={"note": HOSTILE, "card": "4111-1111-1111-1111", "big": HUGE},
        metadata={"k": HOSTILE},
    )
    assert doc.group_id is not None
    return doc.group_id


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


def assert_inert(text: str) -> None:
    """Nothing from the database became markup, a control character, or a huge page."""
    assert "<script>alert" not in text
    assert "<img src=x" not in text
    assert "<b>1</b>" not in text
    assert "\x1b" not in text
    assert "\x00" not in text
    assert "4111-1111-1111-1111" not in text
    assert len(text) < 150_000


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/groups",
        "/groups/{group}",
        "/search?queue=orders",
        "/tasks/orders:<b>1</b>",
        "/audit",
        "/replays",
        "/replays/new?group_id={group}",
    ],
)
async def test_every_page_renders_hostile_records_inert(
    local: httpx.AsyncClient, hostile: str, path: str
) -> None:
    # When
    response = await local.get(path.format(group=hostile))
    # Then
    assert response.status_code == 200, response.text[:500]
    assert_inert(response.text)
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "TRACKER_API_TOKENS" in response.text  # the local-access banner


async def test_the_task_page_shows_the_attempt_timeline(
    local: httpx.AsyncClient, hostile: str
) -> None:
    response = await local.get("/tasks/orders:<b>1</b>")
    assert 'id="timeline"' in response.text
    assert "Attempt 1" in response.text
    assert "&lt;script&gt;alert" in response.text  # shown, as text
    assert "[redacted]" in response.text


async def test_with_tokens_a_page_asks_to_sign_in_first(store: str) -> None:
    async with client((VIEWER, OPERATOR)) as http:
        response = await http.get("/groups?state=open")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/groups%3Fstate%3Dopen"


async def test_a_viewer_sees_pages_but_no_actions(store: str, hostile: str) -> None:
    # Given: a viewer's session
    async with client((VIEWER, OPERATOR)) as http:
        http.cookies.set(sessions.COOKIE, sessions.sign(VIEWER))
        # When
        page = await http.get("/groups")
        form = await http.get(f"/replays/new?group_id={hostile}")
        acted = await http.post(f"/groups/{hostile}/mute", data={"csrf_token": csrf_of(page)})
    # Then
    assert page.status_code == 200
    assert ">Mute</button>" not in page.text
    assert form.status_code == 403
    assert acted.status_code == 403


async def test_an_operator_mutes_a_group_with_the_form(store: str, hostile: str) -> None:
    async with client((VIEWER, OPERATOR)) as http:
        http.cookies.set(sessions.COOKIE, sessions.sign(OPERATOR))
        page = await http.get("/groups")
        # When
        acted = await http.post(f"/groups/{hostile}/mute", data={"csrf_token": csrf_of(page)})
        shown = await http.get(f"/groups/{hostile}")
        audit = await http.get("/audit?action=group.mute")
    # Then
    assert acted.status_code == 303
    assert 'class="pill muted"' in shown.text
    assert "otto" in audit.text


async def test_a_form_post_without_its_csrf_token_is_refused(
    local: httpx.AsyncClient, hostile: str
) -> None:
    # Given
    await local.get("/groups")
    # When
    missing = await local.post(f"/groups/{hostile}/mute", data={})
    wrong = await local.post(f"/groups/{hostile}/mute", data={"csrf_token": "x" * 32})
    foreign = await local.post(
        f"/groups/{hostile}/mute", data={}, headers={"origin": "http://evil.example"}
    )
    # Then
    assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
    shown = await local.get(f"/groups/{hostile}")
    assert 'class="pill muted"' not in shown.text


async def test_a_dry_run_comes_first_and_starts_the_replay(
    local: httpx.AsyncClient, hostile: str
) -> None:
    # Given
    form = await local.get(f"/replays/new?group_id={hostile}")
    token = csrf_of(form)
    # When: the dry run
    dry = await local.post(
        "/replays",
        data={"csrf_token": token, "group_id": hostile, "reason": "back", "dry_run": "true"},
    )
    page = await local.get(dry.headers["location"])
    # Then
    assert dry.status_code == 303
    assert 'data-count="matched">1<' in page.text
    assert "Start the replay (1 tasks)" in page.text
    # When: started from the dry run
    dry_id = dry.headers["location"].rsplit("/", 1)[1]
    real = await local.post("/replays", data={"csrf_token": token, "from_dry_run": dry_id})
    progress = await local.get(real.headers["location"] + "/progress")
    # Then: a replay of its own, polled while it runs
    assert real.headers["location"] != dry.headers["location"]
    assert 'hx-get="' in progress.text


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
async def test_any_search_is_answered_without_a_server_error(
    local: httpx.AsyncClient, value: str
) -> None:
    for name in ("task_id", "metadata", "since", "status", "cursor"):
        response = await local.get("/search", params={name: value})
        assert response.status_code in (200, 400), response.text[:300]
        assert "Traceback" not in response.text


@pytest.mark.rabbitmq
async def test_edit_and_retry_from_the_task_page(store: str, broker: Broker) -> None:
    # Given: the task page of a dead letter, on a console that can publish
    from tracker.rabbit.aio_transport import AioPikaTransport

    queue = await broker.new_queue()
    await dead_letter(queue, "orders:7")
    transport = AioPikaTransport(broker.url)
    await transport.open()
    operator = Operator(Access((), "127.0.0.1"), frozenset({"card"}), transport=transport)
    app = create_app(CollectorRegistry(), Health(), operator=operator)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=HTML
        ) as http:
            page = await http.get("/tasks/orders:7")
            action = re.search(r'action="(/executions/[^"]+/retry)"', page.text)
            assert action is not None
            # When: not JSON, then an edited payload
            bad = await http.post(
                action[1],
                data={"csrf_token": csrf_of(page), "payload": "{nope", "reason": "fix"},
            )
            good = await http.post(
                action[1],
                data={
                    "csrf_token": csrf_of(page),
                    "payload": '{"order": 18, "card": "[redacted]"}',
                    "reason": "order fixed",
                },
            )
            timeline = await http.get("/tasks/orders:7")
    finally:
        await transport.close()
    # Then
    assert bad.status_code == 400
    assert "not valid JSON" in bad.text
    assert good.status_code == 303
    assert timeline.text.count("Attempt ") == 2
    assert "4111" not in timeline.text
    assert await broker.depth(queue) == 1
