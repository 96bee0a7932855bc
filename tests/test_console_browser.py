"""The console as a person uses it, in a real headless Chromium (Debian's, driven by
Playwright): a service with failing tasks, a group muted, a dry run then a replay watched to
its end, a task's timeline opened."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.console_service import FAILING, RunningConsole, running_console
from tests.rabbit import Broker

pytestmark = pytest.mark.rabbitmq
CHROMIUM = os.environ.get("TRACKER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _missing_browser() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (uv sync)"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


@pytest.fixture
async def tab() -> AsyncIterator[Any]:
    """A page in headless Chromium: skipped without a browser, a failure in CI."""
    problem = _missing_browser()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context()
            context.set_default_timeout(15_000)
            opened = await context.new_page()
            dialogs: list[str] = []
            opened.on("dialog", lambda dialog: dialogs.append(dialog.message))
            opened.dialogs = dialogs
            yield opened
            assert dialogs == [], "a script from the database ran"
        finally:
            await browser.close()


@pytest.fixture
async def console(store: str, broker: Broker) -> AsyncIterator[RunningConsole]:
    queue = await broker.new_queue()
    async with running_console(broker.url, queue) as running:
        yield running


async def test_the_overview_shows_the_failing_group(tab: Any, console: RunningConsole) -> None:
    # When
    await tab.goto(console.url + "/")
    # Then: the queue with its dead letters, the failing group, the local-access banner
    await tab.get_by_role("heading", name="Overview").wait_for()
    assert console.queue in await tab.locator("main").inner_text()
    assert await tab.locator("#dead-letters").inner_text() == str(FAILING)
    assert "partner refused order" in await tab.locator("main").inner_text()
    assert "TRACKER_API_TOKENS" in await tab.locator(".banner.warn").inner_text()


async def test_a_group_is_muted_from_the_console(tab: Any, console: RunningConsole) -> None:
    # Given
    await tab.goto(console.url + "/groups")
    row = tab.locator("#groups tbody tr").filter(has_text=console.queue)
    assert await row.locator("td.num").inner_text() == str(FAILING)
    # When
    await row.get_by_role("button", name="Mute").click()
    # Then: the group's page says muted, and so do the API and the audit log
    await tab.locator(".pill.muted").first.wait_for()
    groups = (await console.http.get("/api/v1/failure-groups")).json()["items"]
    assert [g["muted"] for g in groups] == [True]
    audit = (await console.http.get("/api/v1/audit", params={"action": "group.mute"})).json()
    assert [(e["actor"], e["target"]) for e in audit["items"]] == [
        ("local", f"group:{groups[0]['id']}")
    ]


async def test_a_dry_run_then_a_replay_is_watched_to_its_end(
    tab: Any, console: RunningConsole
) -> None:
    # Given: the group's retry form
    await tab.goto(console.url + "/groups")
    await tab.get_by_role("link", name="Retry…").click()
    await tab.get_by_label("Reason (required, audited)").fill("partner is back")
    # When: a dry run first
    await tab.get_by_role("button", name="Dry run").click()
    # Then: it counted, and republished nothing
    progress = tab.locator("#progress")
    await tab.locator('#progress[data-state="completed"]').wait_for()
    assert await progress.locator('[data-count="matched"]').inner_text() == str(FAILING)
    assert await progress.locator('[data-count="republished"]').inner_text() == "0"
    dry_url = tab.url
    # When: the real replay, started from the dry run
    await tab.get_by_role("button", name=f"Start the replay ({FAILING} tasks)").click()
    # Then: the page follows it live until it is finished: every task was republished and
    # failed again (an item counts under its latest outcome)
    await tab.wait_for_url(lambda url: not url.endswith(dry_url))
    assert await progress.get_attribute("data-state") in ("pending", "running")
    await tab.locator('#progress[data-state="completed"]').wait_for(timeout=30_000)
    assert await progress.locator('[data-count="failed"]').inner_text() == str(FAILING)
    assert await progress.locator('[data-count="republished"]').inner_text() == "0"


async def test_a_task_timeline_opens_from_search(tab: Any, console: RunningConsole) -> None:
    # Given
    await tab.goto(console.url + "/search?queue=" + console.queue + "&status=dlq")
    # When
    await tab.locator("table a", has_text=console.task_ids[0]).click()
    # Then: the attempt, dead-lettered, with its error
    timeline = tab.locator("#timeline")
    await timeline.wait_for()
    text = await timeline.inner_text()
    assert "Attempt 1" in text
    assert "partner refused order 1000" in text
    assert await timeline.locator("li > p .pill").all_inner_texts() == ["dlq"]
