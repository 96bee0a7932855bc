"""What the API and the console need from the process that serves them: the access rules,
the fields to redact, and a way to publish (the service's own transport under
``tracker serve``; a connection of its own under ``tracker console``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from tracker.delivery.envelope import OutgoingMessage
from tracker.enqueue import Enqueuer
from tracker.transport import Transport
from tracker.web.access import Access

# Opens the transport to publish on, the first time something is published.
OpenTransport = Callable[[], Awaitable[Transport]]


@dataclass
class Operator:
    """``transport``: the running service's (already open), or None with ``open_transport``
    to connect on first use; neither: nothing can be published from here. ``service``:
    whether this process runs consumers (and so replays), for the console to say.
    ``amqp_url``: the broker, for what reads a queue itself (importing ``Q.dlq``)."""

    access: Access = field(default_factory=Access)
    redact_fields: frozenset[str] = frozenset()
    transport: Transport | None = None
    open_transport: OpenTransport | None = None
    service: bool = False
    amqp_url: str | None = None
    _enqueuer: Enqueuer | None = field(default=None, init=False, repr=False)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def publisher(self) -> Transport:
        """The transport to publish on; 503 when there is none or it cannot be opened."""
        async with self._opening:
            if self.transport is None and self.open_transport is not None:
                try:
                    self.transport = await self.open_transport()
                except Exception as exc:
                    raise HTTPException(
                        503, f"cannot connect to RabbitMQ to publish: {type(exc).__name__}"
                    ) from exc
        if self.transport is None:
            raise HTTPException(503, "this process cannot publish: no RabbitMQ connection")
        return self.transport

    async def publish(self, message: OutgoingMessage) -> None:
        await (await self.publisher()).publish(message)

    async def enqueuer(self) -> Enqueuer:
        transport = await self.publisher()
        if self._enqueuer is None or self._enqueuer.transport is not transport:
            self._enqueuer = Enqueuer(transport)
        return self._enqueuer

    async def close(self) -> None:
        """Close a transport this object opened (a service closes its own)."""
        if self.open_transport is not None and self.transport is not None:
            transport, self.transport = self.transport, None
            await transport.close()


def operator_of(request: Request) -> Operator:
    operator: Operator = request.app.state.operator
    return operator


def redacted(request: Request, value: Any) -> Any:
    """``value`` with the configured fields redacted (see ``tracker.operations.redaction``)."""
    from tracker.operations.redaction import redact

    fields = operator_of(request).redact_fields
    return redact(value, fields) if fields else value
