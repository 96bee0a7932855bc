"""aio-pika over several nodes of one cluster: a robust connection that moves to the next
node when its node goes away, its channels, queues and consumers restored there."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import structlog
from aio_pika import RobustChannel, RobustConnection
from aio_pika.abc import AbstractConnection, TimeoutType
from yarl import URL

from tracker.rabbit.consuming import DeliveryQueue
from tracker.rabbit.nodes import (
    NoBrokerNodeError,
    OnFailover,
    failure_reason,
    node_list,
    notify_failover,
    redact_all,
    shuffled,
)

log = structlog.get_logger("tracker.broker")


class FailoverChannel(RobustChannel):
    """A robust channel that leaves its recovery to the connection when the connection is
    what was lost.

    aio-pika's ``RobustChannel`` reacts to its connection's loss by reopening itself on the
    dead connection; that fails and is logged at ERROR ("Callback <OneShotCallback:
    cb=RobustChannel._on_close> error: RuntimeError ... closed" or "ChannelInvalidStateError:
    No active transport in channel") although nothing is wrong: the connection restores every
    channel, its queues and consumers once it is connected again. This one logs that failure at
    DEBUG instead; a channel closed on a live connection is handled (and logged) as before.

    Its queues are ``DeliveryQueue``s: a consumer may take aiormq's deliveries as read
    (``tracker.rabbit.consuming``).
    """

    QUEUE_CLASS = DeliveryQueue

    async def _on_close(self, closing: asyncio.Future[Any]) -> BaseException | None:
        try:
            return await super()._on_close(closing)
        except Exception as exc:
            if not _connection_lost(self._connection):
                raise
            log.debug("channel reopens with its connection", channel=str(self), error=repr(exc))
            return None


def _connection_lost(connection: AbstractConnection) -> bool:
    transport = connection.transport
    return transport is None or transport.connection.is_closed or not connection.connected.is_set()


class FailoverConnection(RobustConnection):
    """A robust connection over several nodes of one cluster, tried in the order given.

    ``connect()`` dials them in turn and raises ``NoBrokerNodeError`` once each has failed
    (``timeout`` bounds each attempt, so the whole first connect takes at most
    ``len(urls) * timeout``). Once connected, losing the node moves the connection to the next
    one (round robin), at once: the nodes of a round are dialled back to back,
    ``reconnect_interval`` is the pause after a round in which none answered. Channels, their
    queues and consumers are restored on the new node as aio-pika's robust connection does.

    ``current_url``: the node in use (the one dialled next while reconnecting);
    ``current_node`` the same, redacted; ``failovers``: how many times the connection came
    back on another node than the one it lost; ``on_failover(from_node, to_node)``: called
    each time; ``connected`` (aio-pika's ``asyncio.Event``): set while usable.

    Built directly, not through ``aio_pika.connect_robust`` (whose keyword arguments end up in
    the URL's query); ``connect_failover`` builds, shuffles and connects.
    """

    CHANNEL_CLASS = FailoverChannel

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        reconnect_interval: float = 1.0,
        on_failover: OnFailover | None = None,
        **kwargs: Any,
    ) -> None:
        self.urls = node_list(urls)
        self.nodes = redact_all(self.urls)
        self.on_failover = on_failover
        self.failovers = 0
        self._index = 0
        self._failures = 0  # consecutive failed attempts (a loss counts as one)
        self._errors: dict[str, str] = {}
        self._last_node: str | None = None
        self._gave_up = asyncio.Event()
        self._named = self.urls[0]  # see __str__
        # fail_fast would abandon the first connect after the first node's failure.
        kwargs.update(reconnect_interval=reconnect_interval, fail_fast=False)
        super().__init__(URL(self.urls[0]), **kwargs)
        self._interval: float = self.reconnect_interval

    @property
    def current_url(self) -> str:
        return self.urls[self._index]

    @property
    def current_node(self) -> str:
        return self.nodes[self._index]

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Connect to the first node that answers; ``NoBrokerNodeError`` when none does."""
        if self._last_node is not None:
            await super().connect(timeout)
            return
        connecting = asyncio.ensure_future(super().connect(timeout))
        giving_up = asyncio.ensure_future(self._gave_up.wait())
        try:
            await asyncio.wait({connecting, giving_up}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            connecting.cancel()
            await self.close()
            raise
        finally:
            giving_up.cancel()
        if connecting.done():
            connecting.result()
            return
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await self.close()
        raise NoBrokerNodeError(self.nodes, self._errors)

    def __str__(self) -> str:
        """The URL of the node last dialled, password masked. aio-pika names the connection
        this way in its logs, among them "Connection attempt to ... failed", which it writes
        after ``url`` has moved on to the next node."""
        url = URL(self._named)
        return str(url.with_password("******") if url.password else url)

    async def _on_connected(self) -> None:
        self._named = self.current_url
        await super()._on_connected()  # restores the channels, queues and consumers
        node = self.current_node
        previous, self._last_node = self._last_node, node
        self._failures = 0
        self.reconnect_interval = self._interval
        if previous is not None and previous != node:
            self.failovers += 1
            notify_failover(self.on_failover, previous, node)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Called when a connected node is lost and when an attempt to connect fails.
        try:
            exc = closing.exception()
        except asyncio.CancelledError as cancelled:
            exc = cancelled
        was_connected = self.connected.is_set()
        await super()._on_connection_close(closing)
        if self._close_called or self.is_closed:
            return
        failed = self.current_node
        self._named = self.current_url
        self._errors[failed] = failure_reason(exc, self.urls)
        self._failures += 1
        self._index = (self._index + 1) % len(self.urls)
        self.url = URL(self.current_url)
        round_over = self._failures % len(self.urls) == 0
        # aio-pika sleeps reconnect_interval after each failed attempt: not within a round.
        self.reconnect_interval = self._interval if round_over else 0
        if round_over and self._last_node is None:
            self._gave_up.set()
            return
        log.info(
            "broker node lost" if was_connected else "broker node unreachable",
            node=failed,
            error=self._errors[failed],
            next_node=self.current_node,
        )


async def connect_failover(
    urls: str | Sequence[str],
    *,
    timeout: float = 5.0,
    reconnect_interval: float = 1.0,
    on_failover: OnFailover | None = None,
    shuffle: bool = True,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> FailoverConnection:
    """A connected ``FailoverConnection`` to the first node that answers, the nodes tried in
    this process's order (``shuffled``; ``shuffle=False``: as given). ``urls``: a list, or a
    comma-separated string. ``timeout`` bounds each attempt (the first connect takes at most
    ``len(urls) * timeout``); ``NoBrokerNodeError`` when no node answers. ``kwargs`` go to
    aio-pika's connection (``client_properties``, ``ssl_context``)."""
    ordered = node_list(urls)
    if shuffle:
        ordered = shuffled(ordered, rng)
    connection = FailoverConnection(
        ordered, reconnect_interval=reconnect_interval, on_failover=on_failover, **kwargs
    )
    await connection.connect(timeout)
    return connection
