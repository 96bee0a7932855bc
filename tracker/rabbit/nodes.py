"""Several RabbitMQ nodes of one cluster behind one setting, for clients that fail over.

Neither aio-pika nor pika moves to another node by itself: aio-pika's robust connection
redials its one URL, pika's ``BlockingConnection`` tries a list once and never reconnects.
This module holds the node list (``parse_urls``: ``TRACKER_AMQP_URL`` may name several nodes,
comma-separated), spreads processes across it (``shuffled``), keeps credentials out of logs and
errors (``redact``); the clients move to the next node when theirs goes away:
``tracker.rabbit.failover`` for aio-pika, ``tracker.rabbit.pika.nodes`` for pika.

A password holding a comma (or ``@``, ``/``, ``?``, ``#``) must be percent-encoded, as in any
URL; in a list it would otherwise split the item.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import secrets
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import structlog
from yarl import URL

from tracker.errors import ConfigurationError, TrackerError

log = structlog.get_logger("tracker.broker")

SCHEMES = {"amqp": 5672, "amqps": 5671}
# What a host may be: a name or an IPv4 address, or an IPv6 address in brackets. Narrower than
# RFC 3986 on purpose: urllib (pika) and yarl (aio-pika) read the same host from these.
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_BAD_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f]")
OnFailover = Callable[[str, str], None]
"""``on_failover(from_node, to_node)``, both redacted (``host:port``): for a counter such as
``tracker_broker_failovers_total``. Called on the connection's loop or thread; an exception
it raises is logged, not propagated."""


def _advice(errors: dict[str, str]) -> str:
    """What to do about the reasons the nodes gave."""
    reasons = " ".join(errors.values())
    if "ACCESS_REFUSED" in reasons or "Authentication" in reasons:
        return "check the user and password in TRACKER_AMQP_URL"
    return "check that RabbitMQ runs there and that TRACKER_AMQP_URL names it"


class NoBrokerNodeError(TrackerError, ConnectionError):
    """None of the nodes accepted a connection. ``nodes``: the nodes tried, redacted;
    ``errors``: node -> why it failed (credentials removed)."""

    def __init__(self, nodes: Sequence[str], errors: dict[str, str]) -> None:
        detail = "; ".join(f"{node}: {errors.get(node, 'not tried')}" for node in nodes)
        super().__init__(
            f"no RabbitMQ node reachable of {', '.join(nodes)} ({detail}): {_advice(errors)}"
        )
        self.nodes = list(nodes)
        self.errors = dict(errors)


# --------------------------------------------------------------------------- node lists


def parse_urls(value: str) -> list[str]:
    """The ``amqp://``/``amqps://`` URLs of a comma-separated list, in their order, each as
    written (credentials, vhost and query kept). Raises ``ConfigurationError`` naming the bad
    item (never its credentials) for an empty item, another scheme, a URL without a host, a
    bad port, whitespace inside a URL, or a node listed twice."""
    urls: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(value.split(","), start=1):
        item = raw.strip()
        where = f"broker URL {position} ({_describe(item)})" if item else f"broker URL {position}"
        problem = _problem(item)
        if problem is not None:
            raise ConfigurationError(
                f"{where}: {problem}; expected amqp://user:password@host:port/vhost, "
                "comma-separated for several nodes"
            )
        node = redact(item)
        if node in seen:
            raise ConfigurationError(f"{where}: node {node} is listed twice")
        seen.add(node)
        urls.append(item)
    return urls


def _problem(item: str) -> str | None:
    if not item:
        return "empty (a stray comma?)"
    if _BAD_CHARACTER.search(item):
        return "contains whitespace or a control character"
    scheme, sep, _ = item.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return "must start with amqp:// or amqps://"
    host, port = _host_port(item)
    if not host:
        return "has no host"
    if not _HOST.fullmatch(host):
        return "has an invalid host"
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        if port.isdigit():
            return "has an invalid port"
        return "has an invalid port (in a password, percent-encode , @ / ? #)"
    try:  # what the clients parse with: urllib (pika) and yarl (aio-pika)
        parts, parsed = urlsplit(item), URL(item)
        parts.port  # noqa: B018 -- raises ValueError on what the checks above missed
    except ValueError:
        return "is not a valid URL"
    if not parts.hostname or not parsed.host:
        return "has no host"
    return None


def _host_port(url: str) -> tuple[str, str | None]:
    """(host, port or None) of ``url``'s authority, as written, credentials dropped; by hand,
    so that it works (and leaks nothing) on whatever text it is given."""
    rest = url.split("://", 1)[-1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, after = hostport.partition("]")
        host += "]"
        return host, (after[1:] if after.startswith(":") else None)
    host, sep, port = hostport.partition(":")
    return host, (port if sep else None)


def _describe(item: str) -> str:
    """The item as an error message may show it: scheme and host:port only."""
    scheme, sep, _ = item.partition("://")
    # Only a known scheme is shown: what precedes "://" may be a fragment of a password split
    # at a comma.
    scheme = scheme.lower() if scheme.lower() in SCHEMES else "…"
    host, port = _host_port(item)
    shown_port = port if port is not None and port.isdigit() else ("…" if port else None)
    hostport = host if shown_port is None else f"{host}:{shown_port}"
    if not sep:
        return f"…@{hostport}" if "@" in item else "not a URL"
    return f"{scheme}://{hostport or '…'}"


def redact(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port when none is written), for logs and
    metrics labels: never the user, password, vhost or query."""
    host, port = _host_port(url)
    scheme = url.partition("://")[0].lower()
    if port is None or not port.isdigit():
        port = str(SCHEMES.get(scheme, 5672)) if port is None else "…"
    return f"{host or '…'}:{port}"


def redact_all(urls: Sequence[str]) -> list[str]:
    return [redact(url) for url in urls]


_PROCESS_SECRET = secrets.token_bytes(16)


def shuffled(urls: Sequence[str], rng: random.Random | None = None) -> list[str]:
    """``urls`` in this process's order, so that a fleet's connections spread over the nodes.

    The order is random per process and stable within it (the same list always comes back
    the same, and two lists order their common nodes alike); it is keyed on the pid as well, so
    forked workers differ. ``rng``: draw the order from it instead (tests)."""
    if rng is not None:
        return rng.sample(list(urls), len(urls))
    key = hashlib.blake2b(_PROCESS_SECRET + str(os.getpid()).encode(), digest_size=16).digest()

    def rank(url: str) -> bytes:
        return hashlib.blake2b(url.encode(), key=key, digest_size=16).digest()

    return sorted(urls, key=rank)


def node_list(urls: str | Sequence[str]) -> list[str]:
    return parse_urls(urls if isinstance(urls, str) else ",".join(urls))


def failure_reason(exc: BaseException | None, urls: Sequence[str]) -> str:
    """``exc`` as one line for an error or a log, any password of ``urls`` masked."""
    if exc is None:
        return "closed"
    # pika's connection errors have an empty str() and their cause in args.
    detail = str(exc) or ", ".join(repr(arg) for arg in exc.args)
    if not detail and isinstance(exc, TimeoutError):
        detail = "no answer in time"
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    for url in urls:
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                text = text.replace(password, "******")
    return text


def notify_failover(callback: OnFailover | None, from_node: str, to_node: str) -> None:
    log.warning("broker failover", from_node=from_node, to_node=to_node)
    if callback is None:
        return
    try:
        callback(from_node, to_node)
    except Exception as exc:  # a metrics hook must not break the reconnection
        log.error("on_failover callback failed", error=repr(exc))
