"""Serving an ASGI app with uvicorn on the event loop the service already runs.

The socket is bound first, so a port that cannot be had is an error at start (and nothing
is left running), and the service, not uvicorn, owns the process's signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from tracker.errors import ConfigurationError

log = structlog.get_logger("tracker.http")
# A request body larger than this is refused (413) before it is read into memory.
MAX_BODY_BYTES = 2 * 1024 * 1024


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service handles SIGTERM/SIGINT itself and stops the server with it.
        yield


class HttpServer:
    """``app`` on ``host``:``port`` (0: any free port; ``port`` is the bound one once
    started). ``start()`` and ``stop()`` may alternate."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="tracker-http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise ConfigurationError(f"the HTTP endpoint on {self.host}:{self.port} stopped")
            await asyncio.sleep(0.01)
        log.info("HTTP endpoint listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or a ``ConfigurationError`` that says why
    not and what to do."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = (
            " (another process has it: stop it, or set TRACKER_HTTP_PORT / --port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc
    sock.setblocking(False)
    return sock
