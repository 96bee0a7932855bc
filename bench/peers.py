"""Optional peers, each in worker processes of its own on the same broker: Dramatiq and
Celery running a no-op task, for msgs/s and CPU per message beside the tracker's.

Each peer: its producer process publishes N messages (not timed), then one worker process
drains them; the worker times itself (``bench.peer_count``) from the first task's start to
the N-th task's end. A peer that is not installed, fails, or does not finish within its
deadline is reported as skipped, with why."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.options import RESULTS, Options
from bench.scratch import Scratch

THREADS = 8  # both peers' default worker thread count (Dramatiq's own default)
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Peer:
    name: str
    package: str
    module: str
    setup: str  # how it runs, for the report

    def worker_command(self, queue: str) -> list[str]:
        if self.package == "dramatiq":
            return [
                sys.executable,
                "-m",
                "dramatiq",
                self.module,
                "--processes",
                "1",
                "--threads",
                str(THREADS),
                "--worker-shutdown-timeout",
                "5000",
            ]
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.module,
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(THREADS),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "-Q",
            queue,
            "-n",
            f"{queue}@localhost",
        ]

    def queues(self, queue: str) -> list[str]:
        if self.package == "dramatiq":
            return [queue, f"{queue}.DQ", f"{queue}.XQ"]
        return [queue]

    def exchanges(self, queue: str) -> list[str]:
        return [] if self.package == "dramatiq" else [queue]


PEERS = (
    Peer(
        "Dramatiq",
        "dramatiq",
        "bench.peer_dramatiq",
        f"1 worker process, {THREADS} threads, RabbitMQ broker (classic queue), "
        "acked after the actor returns",
    ),
    Peer(
        "Celery",
        "celery",
        "bench.peer_celery",
        f"1 worker process, threads pool of {THREADS}, prefetch multiplier 4, acks late, "
        "no result backend, classic queue",
    ),
)


@dataclass(frozen=True)
class PeerResult:
    name: str
    setup: str
    messages: int
    seconds: float | None = None
    cpu_seconds: float | None = None
    skipped: str | None = None
    version: str | None = None
    duplicates: int = 0  # deliveries run twice: the broker was disturbed meanwhile

    @property
    def rate(self) -> float | None:
        return None if self.seconds is None else self.messages / self.seconds

    @property
    def cpu_us(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds * 1e6 / self.messages


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def run_peers(options: Options, scratch: Scratch) -> list[PeerResult]:
    results = []
    for peer in PEERS:
        if importlib.util.find_spec(peer.package) is None:
            results.append(
                PeerResult(
                    peer.name,
                    peer.setup,
                    options.messages,
                    skipped=f"not installed (`uv pip install {peer.package}`)",
                )
            )
            continue
        results.append(await run_peer(peer, options, scratch))
    return results


def _prepare(peer: Peer) -> tuple[Path, Path]:
    """A private directory for the result file, and the peer's (emptied) log file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"peer-{peer.package}.log"
    log.write_text("")
    return Path(tempfile.mkdtemp(prefix="bench-peer-")), log


def _exists(path: Path) -> bool:
    return path.exists()


def _read(path: Path) -> dict[str, float]:
    data: dict[str, float] = json.loads(path.read_text())
    return data


async def _spawn(command: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group: stopped whole, children included
        )


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop the process group we started: SIGTERM, then SIGKILL after 15 s."""
    if process.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            async with asyncio.timeout(15):
                await process.wait()
            return
        except TimeoutError:
            continue


async def run_peer(peer: Peer, options: Options, scratch: Scratch) -> PeerResult:
    queue = scratch.name(peer.package)
    scratch.own(peer.queues(queue), peer.exchanges(queue))
    messages = options.messages
    workdir, log = _prepare(peer)
    result = workdir / "result.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TRACKER_AMQP_URL": options.amqp_url,
        "BENCH_PEER_QUEUE": queue,
        "BENCH_PEER_EXPECTED": str(messages),
        "BENCH_PEER_RESULT": str(result),
    }
    version = _version(peer.package)

    def skipped(why: str) -> PeerResult:
        return PeerResult(peer.name, peer.setup, messages, skipped=why, version=version)

    try:
        producer = await _spawn(
            [sys.executable, "-m", peer.module, "send", str(messages)], env, log
        )
        try:
            async with asyncio.timeout(60 + messages / 100):
                code = await producer.wait()
        except TimeoutError:
            return skipped(f"its producer did not publish {messages:,} messages in time")
        finally:
            await _stop(producer)
        if code != 0:
            return skipped(f"its producer failed (exit {code}; see {log})")
        worker = await _spawn(peer.worker_command(queue), env, log)
        try:
            async with asyncio.timeout(60 + messages / 50):
                while not _exists(result):
                    if worker.returncode is not None:
                        return skipped(f"its worker exited ({worker.returncode}; see {log})")
                    await asyncio.sleep(0.2)
        except TimeoutError:
            return skipped(f"its worker did not finish {messages:,} messages in time")
        finally:
            await _stop(worker)
        data = _read(result)
        return PeerResult(
            peer.name,
            peer.setup,
            messages,
            seconds=float(data["seconds"]),
            cpu_seconds=float(data["cpu_seconds"]),
            version=version,
            duplicates=int(data.get("duplicates", 0)),
        )
    finally:
        await scratch.delete(peer.queues(queue), peer.exchanges(queue))
        shutil.rmtree(workdir, ignore_errors=True)
