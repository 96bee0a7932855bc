"""The facts a result depends on: the machine, the software, the code measured, the date."""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import aio_pika

from tracker.service import event_loop

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    system: str
    python: str
    rabbitmq: str
    versions: dict[str, str]
    commit: str
    tracker_digest: str
    date: str


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


async def _output(*command: str, timeout: float = 20.0) -> str | None:
    """What ``command`` prints, None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return out.decode().strip() if process.returncode == 0 else None


async def _rabbitmq_version(amqp_url: str) -> str:
    version = await _output("rabbitmqctl", "version")
    if version:
        return version.splitlines()[-1]
    # Without rabbitmqctl (or its rights), the broker says it in the connection handshake.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        transport = connection.transport
        properties = transport.connection.server_properties if transport else {}
        raw = properties.get("version", "unknown")
        return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _commit() -> str:
    """The commit measured, and whether tracker/ differs from it (read-only git commands)."""
    head = await _output("git", "rev-parse", "--short=12", "HEAD")
    if head is None:
        return "unknown (not a git checkout)"
    dirty = await _output("git", "--no-optional-locks", "status", "--porcelain", "--", "tracker")
    return f"{head} (tracker/ with uncommitted changes)" if dirty else head


def tracker_digest() -> str:
    """A digest of tracker/'s sources as measured (others may be changing them)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "tracker").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return f"sha256:{digest.hexdigest()[:12]}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


async def describe(amqp_url: str) -> Machine:
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        system=f"{platform.system()} {platform.release()}",
        python=(
            f"{platform.python_implementation()} {platform.python_version()}, event loop "
            + event_loop.loop_name(asyncio.get_running_loop())
        ),
        rabbitmq=await _rabbitmq_version(amqp_url),
        versions={
            name: _version(name)
            for name in ("pymongo", "aio-pika", "aiormq", "pamqp", "structlog", "pydantic")
        },
        commit=await _commit(),
        tracker_digest=tracker_digest(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
