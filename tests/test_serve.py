"""`tracker serve` as a process: consumes, serves /metrics, logs JSON, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest

from tests.rabbit import Broker

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_serve_runs_the_consumers_and_stops_on_sigterm(broker: Broker) -> None:
    # Given: the service started on a module, without MongoDB configured
    queue = f"serve-{uuid.uuid4().hex[:8]}"
    broker.queues.append(queue)
    port = _free_port()
    env = {
        **os.environ,
        "SERVE_TEST_QUEUE": queue,
        "TRACKER_HTTP_PORT": str(port),
        "TRACKER_AMQP_URL": broker.url,
    }
    env.pop("TRACKER_MONGODB_URL", None)
    env.pop("TRACKER_LOG_FORMAT", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker.cli",
        "serve",
        "tests.serve_target",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # the endpoint answers from the start, 503 until the service is ready
        async with asyncio.timeout(30):
            while True:
                try:
                    health = await _get(port, "/healthz")
                    if b" 503 " not in health.split(b"\r\n")[0]:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.2)
        assert b" 200 " in health.split(b"\r\n")[0]
        # When: a message arrives
        await broker.publish_raw(queue, {"hello": "world"}, message_id="m-1", correlation_id="t-1")
        try:
            async with asyncio.timeout(30):
                while (
                    b'tracker_completed_total{handler="echo",queue="' + queue.encode() + b'"} 1.0'
                    not in (await _get(port, "/metrics"))
                ):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            metrics = (await _get(port, "/metrics")).decode(errors="replace")
            process.kill()
            told = (await process.stderr.read()).decode()[-3000:]  # type: ignore[union-attr]
            raise AssertionError(
                f"not completed within 30 s; the service said:\n{told}\nmetrics:\n{metrics}"
            ) from None
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # Then: it stopped cleanly, warned about the in-memory store, and logged JSON lines
    stdout = (await process.stdout.read()).decode()  # type: ignore[union-attr]
    stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    assert code == 0, stderr
    assert "IN-MEMORY MongoDB" in stderr
    events = [json.loads(line) for line in (stdout + stderr).splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "worker started" in names
    assert "worker stopped" in names
    echo = next(e for e in events if e["event"] == "echo")
    assert echo["task_id"] == "t-1"
    assert echo["execution_id"] == "m-1"
    # on uvloop, installed with the test dependencies as with the `speed` extra
    [serving] = [e for e in events if e["event"] == "serving"]
    assert serving["event_loop"] == "uvloop"
