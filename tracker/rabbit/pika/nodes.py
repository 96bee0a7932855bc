"""pika over several nodes of one cluster: connect to the first that answers, and move on
to the next when the connection is lost (pika reconnects nothing by itself)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pika
import pika.exceptions
import structlog
from pika.adapters.utils.connection_workflow import AMQPConnectorException

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
T = TypeVar("T")


class PikaNodes:
    """pika connections over several nodes: ``connect()`` returns a ``BlockingConnection`` to
    the first node that answers, starting after the node of the previous connection, so that
    calling it again after losing a node moves on to the next one. pika itself never
    reconnects; an application's consume loop does, with ``connect()`` or ``run()``::

        nodes = PikaNodes(settings.amqp_url)          # one URL or a comma-separated list
        while True:
            connection = nodes.connect(rounds=3)      # NoBrokerNodeError: none answered
            try:
                channel = connection.channel()
                on_message.consume(channel)
                channel.start_consuming()
                break
            except pika.exceptions.AMQPConnectionError:   # lost the node: the next one
                log.warning("lost %s", nodes.current_node)

    or ``nodes.run(consume)`` with ``consume(connection)`` doing the body of that ``try``.

    Every node's parameters get ``connection_attempts`` and ``retry_delay`` (small: the other
    nodes are there to try) and ``timeout`` (bounds each attempt: TCP connect and the whole
    handshake); ``retry_delay`` is also the pause between two rounds in which no node
    answered. ``current_url``/``current_node``: the node of the last connection;
    ``failovers``/``on_failover`` as ``FailoverConnection``'s.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        shuffle: bool = True,
        rng: random.Random | None = None,
        connection_attempts: int = 1,
        retry_delay: float = 0.5,
        timeout: float = 5.0,
        on_failover: OnFailover | None = None,
    ) -> None:
        ordered = node_list(urls)
        self.urls = shuffled(ordered, rng) if shuffle else ordered
        self.nodes = redact_all(self.urls)
        self.connection_attempts = connection_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.on_failover = on_failover
        self.failovers = 0
        self._index: int | None = None  # of the last node connected to

    @property
    def current_url(self) -> str | None:
        return None if self._index is None else self.urls[self._index]

    @property
    def current_node(self) -> str | None:
        return None if self._index is None else self.nodes[self._index]

    def parameters(self, url: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.connection_attempts = self.connection_attempts
        params.retry_delay = self.retry_delay
        params.socket_timeout = self.timeout  # the TCP connect
        params.stack_timeout = self.timeout  # TCP, TLS and the AMQP handshake together
        return params

    def connect(self, rounds: int = 1) -> pika.BlockingConnection:
        """A connection to the first node that answers, trying each node at most ``rounds``
        times (``retry_delay`` between rounds), starting after the previous connection's
        node; ``NoBrokerNodeError`` when none answered."""
        count = len(self.urls)
        start = 0 if self._index is None else (self._index + 1) % count
        errors: dict[str, str] = {}
        for round_number in range(max(1, rounds)):
            if round_number:
                time.sleep(self.retry_delay)
            for offset in range(count):
                index = (start + offset) % count
                try:
                    connection = pika.BlockingConnection(self.parameters(self.urls[index]))
                # A handshake that times out escapes pika as AMQPConnectorStackTimeout.
                except (
                    pika.exceptions.AMQPConnectionError,
                    AMQPConnectorException,
                    OSError,
                ) as exc:
                    errors[self.nodes[index]] = failure_reason(exc, self.urls)
                    log.info(
                        "broker node unreachable",
                        node=self.nodes[index],
                        error=errors[self.nodes[index]],
                    )
                    continue
                previous = self.current_node
                self._index = index
                if previous is not None and previous != self.nodes[index]:
                    self.failovers += 1
                    notify_failover(self.on_failover, previous, self.nodes[index])
                return connection
        raise NoBrokerNodeError(self.nodes, errors)

    def run(self, consume: Callable[[pika.BlockingConnection], T], *, rounds: int = 3) -> T:
        """``consume(connection)`` on a connection to a node; when it raises
        ``AMQPConnectionError`` (the node went away), again on a connection to the next node.
        Returns what ``consume`` returns, once it returns; the connection is closed then, and
        on any other exception. ``NoBrokerNodeError`` when no node answers ``rounds`` times."""
        while True:
            connection = self.connect(rounds)
            try:
                return consume(connection)
            except pika.exceptions.AMQPConnectionError as exc:
                log.warning(
                    "broker connection lost",
                    node=self.current_node,
                    error=failure_reason(exc, self.urls),
                )
            finally:
                if connection.is_open:
                    with contextlib.suppress(pika.exceptions.AMQPError):
                        connection.close()


def blocking_connection(urls: str | Sequence[str], **options: Any) -> pika.BlockingConnection:
    """A ``BlockingConnection`` to the first of ``urls`` that answers, in this process's order
    (``PikaNodes(urls, **options).connect()``). It does not reconnect: see ``PikaNodes``."""
    return PikaNodes(urls, **options).connect()
