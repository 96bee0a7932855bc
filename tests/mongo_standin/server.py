"""The asyncio server: connections, the control commands, fault injection and silence.

Each connection answers its requests in order on its own task, so a blocked or silenced
command holds up only its connection, as on a real server.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, cast

from tests.mongo_standin import wire
from tests.mongo_standin.commands import HELLO_COMMANDS, MAX_MESSAGE_SIZE, Engine
from tests.mongo_standin.errors import CommandError, bad_value
from tests.mongo_standin.faults import (
    FailCommand,
    error_labels,
    failure_reply,
    write_concern_error,
)

CONTROL_COMMANDS: Final = frozenset(
    {"configureFailPoint", "standinSilence", "standinStats", "standinReset"}
)
# Answered even while silent: the handshake and monitoring, and the switches themselves.
ALWAYS_ANSWERED: Final = HELLO_COMMANDS | CONTROL_COMMANDS


class _Connection(asyncio.Protocol):
    """One client socket: splits the byte stream into messages and answers them in order."""

    def __init__(self, server: StandInServer, connection_id: int) -> None:
        self.server = server
        self.id = connection_id
        self.app_name: str | None = None
        self._buffer = bytearray()
        self._messages: asyncio.Queue[bytes] = asyncio.Queue()
        self._transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= wire.HEADER.size:
            length = wire.message_length(self._buffer)
            if not wire.HEADER.size <= length <= MAX_MESSAGE_SIZE:
                self.close()
                return
            if len(self._buffer) < length:
                return
            self._messages.put_nowait(bytes(self._buffer[:length]))
            del self._buffer[:length]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def _serve(self) -> None:
        while True:
            message = await self._messages.get()
            try:
                request = wire.parse(message)
            except (wire.ProtocolError, ValueError, IndexError) as error:
                print(f"mongo stand-in: closing a connection: {error}", file=sys.stderr)
                self.close()
                return
            reply = await self.server.answer(self, request)
            if reply is not None and self._transport is not None:
                self._transport.write(reply)


class StandInServer:
    """The stand-in on the running event loop (``async with StandInServer() as server``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.engine = Engine()
        self.fail_command = FailCommand()
        self.silent = False
        self.stats: Counter[str] = Counter()
        self.connections: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._created = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.engine.address = f"{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and drop every connection (pending requests stay unanswered)."""
        if self._server is not None:
            self._server.close()
        connections = list(self.connections)
        for connection in connections:
            connection.close()
            if connection.task is not None:
                connection.task.cancel()
        tasks = [connection.task for connection in connections if connection.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> StandInServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _connect(self) -> _Connection:
        self._created += 1
        return _Connection(self, next(self._ids))

    async def answer(self, connection: _Connection, request: wire.Request) -> bytes | None:
        """The encoded reply to a request, or None when nothing is to be sent."""
        command = request.command
        name = next(iter(command), "")
        self.stats[name] += 1
        if name in HELLO_COMMANDS and connection.app_name is None:
            client = command.get("client")
            if isinstance(client, Mapping):
                connection.app_name = (client.get("application") or {}).get("name")
        if self.silent and name not in ALWAYS_ANSWERED:
            return None
        if name in CONTROL_COMMANDS:
            reply = self._control(name, command, request.database)
        else:
            fault = self.fail_command.consume(name, connection.app_name)
            if fault is None:
                reply = self.engine.run(command, request.database, connection_id=connection.id)
            else:
                answered = await self._inject(fault, connection, command, request.database)
                if answered is None:
                    return None
                reply = answered
        if request.more_to_come:
            return None
        encode = wire.encode_reply if request.legacy else wire.encode_msg
        try:
            return encode(request.request_id, reply)
        except Exception as error:  # a stand-in bug must not leave the client waiting
            traceback.print_exc()
            failure = CommandError(1, f"the MongoDB stand-in cannot encode its reply: {error!r}")
            return encode(request.request_id, failure.reply())

    async def _inject(
        self,
        fault: Mapping[str, Any],
        connection: _Connection,
        command: dict[str, Any],
        database: str,
    ) -> dict[str, Any] | None:
        """Carry out a fired fail point: block, close, fail, or run and add a write concern
        error. None means the connection was closed."""
        if fault.get("blockConnection"):
            await asyncio.sleep(float(fault.get("blockTimeMS", 0)) / 1000)
        if fault.get("closeConnection"):
            connection.close()
            return None
        if "errorCode" in fault:
            return failure_reply(fault, command)
        reply = self.engine.run(command, database, connection_id=connection.id)
        if "writeConcernError" in fault and reply.get("ok"):
            error = write_concern_error(fault)
            reply["writeConcernError"] = error
            labels = error_labels(fault, command, int(error.get("code", 0)))
            if labels:
                reply["errorLabels"] = labels
        return reply

    def _control(self, name: str, command: dict[str, Any], database: str) -> dict[str, Any]:
        try:
            if name == "configureFailPoint":
                if database != "admin":
                    raise CommandError(
                        13, "configureFailPoint may only be run against the admin database."
                    )
                if command[name] != "failCommand":
                    raise bad_value(f"the stand-in has no fail point {command[name]!r}")
                count = self.fail_command.configure(command.get("mode"), command.get("data"))
                return {"count": count, "ok": 1.0}
            if name == "standinSilence":
                was, self.silent = self.silent, bool(command.get("on", True))
                return {"was": was, "ok": 1.0}
            if name == "standinStats":
                return {
                    "commands": dict(self.stats),
                    "connections": {"current": len(self.connections), "total": self._created},
                    "silent": self.silent,
                    "failCommand": self.fail_command.status(),
                    "ok": 1.0,
                }
            self.stats.clear()
            return {"ok": 1.0}
        except CommandError as error:
            return error.reply()


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_listening: Callable[[StandInServer], None] | None = None,
) -> None:
    """Serve until cancelled; ``on_listening`` is told once the port is bound."""
    server = StandInServer(host, port)
    await server.start()
    try:
        if on_listening is not None:
            on_listening(server)
        await asyncio.Event().wait()
    finally:
        await server.close()
