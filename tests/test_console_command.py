"""`tracker console` and `make console` as processes: the URL printed, the console and the
API answering on it, a clean stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.rabbit import Broker
from tracker.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_help_says_the_in_memory_default_sees_nothing_of_another_process() -> None:
    # When
    result = CliRunner().invoke(main, ["console", "--help"])
    # Then
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "sees NOTHING of another process" in text
    assert "TRACKER_MONGODB_URL" in text


def test_console_is_a_listed_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "console" in result.output


async def _url_of(process: asyncio.subprocess.Process, within: float) -> str:
    """The console URL the process prints on stdout."""
    assert process.stdout is not None
    async with asyncio.timeout(within):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError("the process ended without printing the console URL")
            found = re.search(r"console: (http://\S+/)", line)
            if found:
                return found[1]


async def _stop(process: asyncio.subprocess.Process, signum: int) -> int:
    process.send_signal(signum)
    async with asyncio.timeout(30):
        return await process.wait()


async def test_tracker_console_serves_the_api_and_the_pages_until_sigterm() -> None:
    # Given: the in-memory default
    env = {**os.environ, "TRACKER_LOG_LEVEL": "WARNING"}
    env.pop("TRACKER_MONGODB_URL", None)
    env.pop("TRACKER_API_TOKENS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker.cli", "console", "--port", "0",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        # When
        url = await _url_of(process, 30)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            queues = await http.get("api/v1/queues")
            page = await http.get("", headers={"accept": "text/html"})
        code = await _stop(process, signal.SIGTERM)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # Then
    assert queues.json() == {"items": [], "next_cursor": None}
    assert page.status_code == 200
    assert "Overview" in page.text
    assert code == 0
    stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    assert "IN-MEMORY MongoDB" in stderr
    assert "Traceback" not in stderr


@pytest.mark.rabbitmq
async def test_make_console_shows_the_demo_failures_until_ctrl_c(broker: Broker) -> None:
    # Given: the demo with its console, on a free port
    env = {**os.environ, "TRACKER_AMQP_URL": broker.url, "TRACKER_HTTP_PORT": "0"}
    env.pop("TRACKER_MONGODB_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "scripts/demo.py", "--console",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        # When: the demo has run
        url = await _url_of(process, 90)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            groups = (await http.get("api/v1/failure-groups")).json()["items"]
            page = await http.get("groups", headers={"accept": "text/html"})
        code = await _stop(process, signal.SIGINT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # Then: its failures are there, grouped, and Ctrl-C ends it cleanly
    assert {g["queue"] for g in groups} == {"reports-demo"}
    assert sum(g["count"] for g in groups) >= 2
    assert "reports-demo" in page.text
    assert code == 0
