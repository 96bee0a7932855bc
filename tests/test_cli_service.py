"""The command line on a running service over the network (`--service`, TRACKER_SERVICE_URL):
a service on the in-memory store is fully operable from another process, and every way the
service can fail the command (out of reach, not a tracker, silent, a wrong token, a role too
small) is one line with what to do, exit 1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import tracker
from tests.rabbit import Broker
from tracker.cli import main
from tracker.cli.app import CliState, ServiceTarget
from tracker.errors import ConfigurationError
from tracker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "an-operator-token-0123456789"
VIEWER_TOKEN = "a-viewer-token-0123456789"
FAILING = {"on": True}


async def handle(task: tracker.TaskContext) -> dict[str, bool]:
    if task.payload.get("fail") and FAILING["on"]:
        raise tracker.ProcessingError(f"partner refused order {task.payload.get('order')}")
    return {"ok": True}


async def command(url: str, *args: str, token: str | None = TOKEN) -> tuple[int, Any, str]:
    """``tracker --service URL ARGS`` in a process of its own: exit code, stdout (as JSON
    when it is), stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    if token is not None:
        env["TRACKER_SERVICE_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker.cli", "--service", url, *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return process.returncode or 0, parsed, err.decode()


async def until(check: Any, within: float = 30) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.1)


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_a_service_on_the_in_memory_store_is_operated_from_another_process(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a service on the in-memory store with tokens, fed through its API: one task
    # completes, one is dead-lettered (its partner refuses it)
    monkeypatch.setenv("TRACKER_API_TOKENS", f"ana:operator:{TOKEN},vic:viewer:{VIEWER_TOKEN}")
    FAILING["on"] = True
    queue = await broker.new_queue()
    consumer = tracker.tracked(queue, max_retries=0)(handle)
    worker = tracker.Worker(
        [consumer], broker.url, metrics_port=0, metrics_host="127.0.0.1", sweep_interval=None
    )
    async with worker:
        assert worker.http_server is not None
        url = f"http://127.0.0.1:{worker.http_server.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            auth = {"authorization": f"Bearer {TOKEN}"}
            for task_id, payload in (("order-1700-a", {"fail": True, "order": 1700}),
                                     ("order-1800-b", {"order": 1800})):  # fmt: skip
                body = {"queue": queue, "payload": payload, "task_id": task_id}
                created = await http.post("/api/v1/tasks", json=body, headers=auth)
                assert created.status_code == 201, created.text

        async def settled() -> bool:
            counts = await tracker.TaskTracker.get_queue_stats(queue)
            return counts["dlq"] == 1 and counts["completed"] == 1

        await until(settled)
        # When: another process reads it, finds the dead letter by the start of its task id,
        # and retries it once the cause is gone
        stats = await command(url, "stats", "--queue", queue, "--json")
        listed = await command(url, "dlq", "list", "--queue", queue, "--json")
        chain = await command(url, "status", "order-17", "--json")
        FAILING["on"] = False
        retried = await command(url, "dlq", "retry", "order-17", "--yes", "--json")

        async def completed() -> bool:
            return (await tracker.TaskTracker.get_queue_stats(queue))["completed"] == 2

        await until(completed)
        audited = await command(url, "audit", "--action", "replay.start", "--json")
        # Then: the same answers the store gives, and the action is the token's
        assert stats[:2] == (0, {queue: {**await tracker.TaskTracker.get_queue_stats(queue),
                                         "completed": 1, "dlq": 1, "archived": 0}})  # fmt: skip
        [entry] = listed[1]
        assert (entry["taskId"], entry["errorMessage"]) == (
            "order-1700-a",
            "partner refused order 1700",
        )
        assert chain[0] == 0
        assert chain[1]["taskId"] == "order-1700-a"
        assert retried[0] == 0, retried
        assert [r["outcome"] for r in retried[1]["results"]] == ["retried"]
        assert [(e["actor"], e["via"]) for e in audited[1]["items"]] == [("ana", "api")]


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_a_wrong_token_a_missing_one_and_a_small_role_are_one_line_each(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a service with tokens
    monkeypatch.setenv("TRACKER_API_TOKENS", f"ana:operator:{TOKEN},vic:viewer:{VIEWER_TOKEN}")
    queue = await broker.new_queue()
    consumer = tracker.tracked(queue)(handle)
    worker = tracker.Worker(
        [consumer], broker.url, metrics_port=0, metrics_host="127.0.0.1", sweep_interval=None
    )
    async with worker:
        assert worker.http_server is not None
        url = f"http://127.0.0.1:{worker.http_server.port}"
        # When
        wrong = await command(url, "stats", token="not-the-token-at-all")
        missing = await command(url, "stats", token=None)
        viewer = await command(url, "dlq", "purge", "--archived-older-than", "0s", "--yes",
                               token=VIEWER_TOKEN)  # fmt: skip
        reads = await command(url, "stats", "--json", token=VIEWER_TOKEN)
    # Then
    for code, out, err in (wrong, missing, viewer):
        assert (code, out) == (1, ""), err
        [line] = err.splitlines()
        assert line.startswith("Error: ")
    assert "TRACKER_SERVICE_TOKEN" in wrong[2]
    assert "TRACKER_SERVICE_TOKEN" in missing[2]
    assert "'vic' is a viewer: this needs the operator role" in viewer[2]
    assert reads[0] == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def answering() -> Iterator[tuple[str, list[bytes]]]:
    """A TCP server on loopback that answers each connection with the next of its replies
    (none left: it says nothing and holds the connection)."""
    replies: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            held.append(client)
            client.recv(65536)
            if replies:
                client.sendall(replies.pop(0))
                client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", replies
    server.close()
    for client in held:
        client.close()


def cli_on(url: str, *args: str, timeout: float | None = None) -> Any:
    target = ServiceTarget(url, "some-token-0123456789", read_timeout=timeout)
    return CliRunner().invoke(main, list(args), obj=CliState(Settings(), service=target))


def test_a_service_out_of_reach_is_one_line_saying_what_to_do() -> None:
    # Given: nothing listens on the port
    url = f"http://127.0.0.1:{free_port()}"
    # When
    result = cli_on(url, "stats")
    # Then
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: cannot reach the service at {url}")
    assert "is `tracker serve` running there?" in line


def test_a_server_that_is_not_a_tracker_service_is_named_so(
    answering: tuple[str, list[bytes]],
) -> None:
    # Given: a web server that answers HTML, then one that fails without JSON
    url, replies = answering
    replies += [
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: 9\r\n\r\n<h1>?</h1",
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
    ]
    # When
    html = cli_on(url, "groups", "list")
    gateway = cli_on(url, "stats")
    # Then
    for result, status in ((html, 404), (gateway, 502)):
        assert result.exit_code == 1
        [line] = result.output.splitlines()
        assert f"answered {status} without the tracker's JSON" in line


def test_a_silent_service_is_given_up_on_within_the_bound(
    answering: tuple[str, list[bytes]],
) -> None:
    # Given: a server that accepts and never answers
    url, _ = answering
    # When
    result = cli_on(url, "stats", timeout=0.5)
    # Then
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert f"the service at {url} did not answer within 0.5 s" in line


def test_a_service_url_that_is_not_one_is_a_usage_error() -> None:
    for url in ("ftp://host", "127.0.0.1:9464", "http://", "http://host:99999"):
        result = CliRunner().invoke(main, ["--service", url, "stats"], obj=CliState(Settings()))
        assert result.exit_code == 2, (url, result.output)
        assert "--service" in result.output


def test_a_service_url_with_a_password_is_refused_without_showing_it() -> None:
    for url in ("http://admin:s3cret@127.0.0.1:9464", "admin:s3cret@127.0.0.1:9464"):
        result = CliRunner().invoke(main, ["--service", url, "stats"], obj=CliState(Settings()))
        assert result.exit_code == 2, (url, result.output)
        assert "TRACKER_SERVICE_TOKEN" in result.output
        assert "s3cret" not in result.output
    with pytest.raises(ConfigurationError, match="user or password"):
        Settings.from_env({"TRACKER_SERVICE_URL": "https://u:p@tracker.example:9464"})
