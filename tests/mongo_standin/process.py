"""The stand-in in its own OS process, for benchmarks and tests that must not share a loop
(or a GIL) with the client."""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Final

ROOT: Final = Path(__file__).resolve().parents[2]
_LISTENING: Final = re.compile(r"listening (\S+):(\d+)")


class StandIn:
    """Starts ``python -m tests.mongo_standin`` and stops it on exit.

    Use it as ``with StandIn() as standin:`` or ``async with StandIn() as standin:``, then
    connect to ``standin.url``.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 20.0
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> StandIn:
        """Launch the server and wait for its ``listening host:port`` line."""
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.mongo_standin",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout: IO[str] | None = self._process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], self.startup_timeout)
        line = stdout.readline() if ready else ""
        match = _LISTENING.fullmatch(line.strip())
        if match is None:
            code = self._process.poll()
            self.stop()
            raise RuntimeError(f"the MongoDB stand-in did not start (exit code {code}): {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    def stop(self) -> None:
        """Kill the server; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> StandIn:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
