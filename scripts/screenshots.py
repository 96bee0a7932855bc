"""Screenshots of the console's main pages into docs/ (``make screenshots``): a service with
failing tasks on the local RabbitMQ and the in-memory MongoDB, a group muted, a replay run,
each page taken in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path

import aio_pika
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tracker  # noqa: E402
from tests.console_service import running_console  # noqa: E402
from tracker.logging import configure_logging  # noqa: E402
from tracker.rabbit.topology import topology_queue_names  # noqa: E402
from tracker.retry import RetryPolicy  # noqa: E402
from tracker.settings import Settings  # noqa: E402

CHROMIUM = os.environ.get("TRACKER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS = ROOT / "docs"


async def main() -> None:
    settings = Settings.from_env()
    configure_logging("console", "ERROR")
    await tracker.connect(None, "screenshots")
    queue = f"orders-{uuid.uuid4().hex[:6]}"
    try:
        async with running_console(settings.amqp_url, queue) as console:
            groups = (await console.http.get("/api/v1/failure-groups")).json()["items"]
            replay = await console.http.post(
                "/api/v1/replays",
                json={"group_id": groups[0]["id"], "reason": "partner is back"},
            )
            job = replay.json()["id"]
            async with asyncio.timeout(30):
                while (await console.http.get(f"/api/v1/replays/{job}")).json()["state"] not in (
                    "completed",
                    "stopped",
                ):
                    await asyncio.sleep(0.2)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                shots = {
                    "overview": "/",
                    "groups": "/groups",
                    "replay": f"/replays/{job}",
                    "task": f"/tasks/{console.task_ids[0]}",
                    "audit": "/audit",
                }
                for name, path in shots.items():
                    await page.goto(console.url + path)
                    await page.screenshot(path=DOCS / f"console-{name}.png", full_page=True)
                    print(f"docs/console-{name}.png")
                await browser.close()
    finally:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in topology_queue_names(queue, RetryPolicy().tiers_ms, 300_000):
                await channel.queue_delete(name)


if __name__ == "__main__":
    asyncio.run(main())
