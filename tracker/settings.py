"""Settings read from the environment (``TRACKER_*``) once, at the edge, as one frozen
dataclass; nothing deeper in the package reads the environment."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from tracker.api_tokens import ApiToken, parse_fields, parse_tokens
from tracker.constants import (
    DEFAULT_AMQP_URL,
    DEFAULT_AUDIT_RETENTION_SECONDS,
    DEFAULT_DATABASE,
    DEFAULT_METRICS_PORT,
    OPERATIONS_RETENTION_SECONDS,
)
from tracker.errors import ConfigurationError
from tracker.service.event_loop import EVENT_LOOPS, EventLoopName
from tracker.validation import check_search_key

# "auto": console lines on a terminal, JSON lines otherwise.
LogFormat = Literal["json", "console", "auto"]
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
DEFAULT_HTTP_HOST = "127.0.0.1"
# More replicas than any cluster has is a typo.
MAX_QUORUM_GROUP_SIZE = 99


@dataclass(frozen=True)
class Settings:
    """Where the tracker stores its documents, which broker it talks to, and how it reports.

    ``mongodb_url`` ``None`` means the in-memory MongoDB: one process only, nothing persists.
    ``http_port`` ``None`` means not configured: ``tracker serve`` then uses 9464, a
    ``Worker`` serves no endpoint. ``api_tokens`` empty: the console and the API answer on
    a loopback bind only; ``redact_fields``: payload fields never shown (lower-case).
    ``service_url`` and ``service_token``: a running service the ``tracker`` command
    operates through its HTTP API, and the bearer token it sends.
    """

    mongodb_url: str | None = None
    database: str = DEFAULT_DATABASE
    amqp_url: str = DEFAULT_AMQP_URL
    http_port: int | None = None
    http_host: str = DEFAULT_HTTP_HOST
    log_format: LogFormat = "auto"
    log_level: str = "INFO"
    sharded: bool = False
    # Metadata keys operators search by (each gets an index), and how long the audit log
    # keeps its entries.
    search_keys: tuple[str, ...] = ()
    audit_retention: float = DEFAULT_AUDIT_RETENTION_SECONDS
    api_tokens: tuple[ApiToken, ...] = ()
    redact_fields: frozenset[str] = frozenset()
    # How many cluster nodes hold each new quorum queue (None: the broker's default).
    quorum_group_size: int | None = None
    service_url: str | None = None
    service_token: str | None = None
    # The service's event loop (tracker.service.event_loop): uvloop when installed.
    event_loop: EventLoopName = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``TRACKER_MONGODB_URL``, ``TRACKER_DATABASE``, ``TRACKER_AMQP_URL``,
        ``TRACKER_HTTP_PORT`` (formerly ``TRACKER_METRICS_PORT``), ``TRACKER_HTTP_HOST``,
        ``TRACKER_SHARDED`` (the collection is sharded on ``{taskId: 1}``),
        ``TRACKER_LOG_FORMAT``, ``TRACKER_LOG_LEVEL``, ``TRACKER_API_TOKENS``,
        ``TRACKER_REDACT_FIELDS`` (see ``tracker.api_tokens``),
        ``TRACKER_QUORUM_GROUP_SIZE``, ``TRACKER_SERVICE_URL``, ``TRACKER_SERVICE_TOKEN`` and
        ``TRACKER_EVENT_LOOP``."""
        env = os.environ if environ is None else environ
        settings = cls.from_dsn(env.get("TRACKER_MONGODB_URL") or None)
        if database := env.get("TRACKER_DATABASE"):
            settings = replace(settings, database=database)
        if amqp_url := env.get("TRACKER_AMQP_URL"):
            settings = replace(settings, amqp_url=amqp_url)
        port = env.get("TRACKER_HTTP_PORT")
        if not port and (port := env.get("TRACKER_METRICS_PORT")):
            warnings.warn(
                "TRACKER_METRICS_PORT is renamed TRACKER_HTTP_PORT; the old name is read "
                "until the next minor version",
                DeprecationWarning,
                stacklevel=2,
            )
            name = "TRACKER_METRICS_PORT"
        else:
            name = "TRACKER_HTTP_PORT"
        if port:
            settings = replace(settings, http_port=_parse_port(name, port))
        if host := env.get("TRACKER_HTTP_HOST"):
            settings = replace(settings, http_host=host)
        if sharded := env.get("TRACKER_SHARDED"):
            if sharded.lower() not in _BOOLEANS:
                raise ConfigurationError(
                    f"TRACKER_SHARDED must be one of {sorted(_BOOLEANS)}, not {sharded!r}"
                )
            settings = replace(settings, sharded=_BOOLEANS[sharded.lower()])
        if keys := env.get("TRACKER_SEARCH_KEYS"):
            settings = replace(settings, search_keys=parse_search_keys(keys))
        if days := env.get("TRACKER_AUDIT_RETENTION_DAYS"):
            settings = replace(settings, audit_retention=parse_audit_retention(days))
        if log_format := env.get("TRACKER_LOG_FORMAT"):
            if log_format not in ("json", "console", "auto"):
                raise ConfigurationError(
                    f"TRACKER_LOG_FORMAT must be 'json', 'console' or 'auto', not {log_format!r}"
                )
            settings = replace(settings, log_format=log_format)  # type: ignore[arg-type]
        if log_level := env.get("TRACKER_LOG_LEVEL"):
            if log_level.upper() not in _LOG_LEVELS:
                raise ConfigurationError(
                    f"TRACKER_LOG_LEVEL must be one of {sorted(_LOG_LEVELS)}, not {log_level!r}"
                )
            settings = replace(settings, log_level=log_level.upper())
        if tokens := env.get("TRACKER_API_TOKENS"):
            settings = replace(settings, api_tokens=parse_tokens(tokens))
        if fields := env.get("TRACKER_REDACT_FIELDS"):
            settings = replace(settings, redact_fields=parse_fields(fields))
        if size := env.get("TRACKER_QUORUM_GROUP_SIZE"):
            settings = replace(settings, quorum_group_size=_parse_group_size(size))
        if url := env.get("TRACKER_SERVICE_URL"):
            settings = replace(settings, service_url=parse_service_url(url))
        if token := env.get("TRACKER_SERVICE_TOKEN"):
            settings = replace(settings, service_token=token.strip())
        if event_loop := env.get("TRACKER_EVENT_LOOP"):
            if event_loop not in EVENT_LOOPS:
                raise ConfigurationError(
                    f"TRACKER_EVENT_LOOP must be one of {list(EVENT_LOOPS)}, not {event_loop!r}"
                )
            settings = replace(settings, event_loop=event_loop)  # type: ignore[arg-type]
        return settings

    @classmethod
    def from_dsn(cls, mongodb_url: str | None) -> Settings:
        """Settings for ``mongodb_url``; a database named in its path becomes ``database``."""
        if mongodb_url is None:
            return cls()
        parts = urlsplit(mongodb_url)
        if parts.scheme not in ("mongodb", "mongodb+srv"):
            raise ConfigurationError(
                f"TRACKER_MONGODB_URL must start with mongodb:// or mongodb+srv://, "
                f"got {mongodb_url!r}"
            )
        database = parts.path.lstrip("/") or DEFAULT_DATABASE
        return cls(mongodb_url=mongodb_url, database=database)

    @property
    def in_memory(self) -> bool:
        return self.mongodb_url is None

    @property
    def service_http_port(self) -> int:
        """The port ``tracker serve`` listens on: the configured one, else 9464."""
        return DEFAULT_METRICS_PORT if self.http_port is None else self.http_port

    @property
    def metrics_port(self) -> int:
        """Deprecated name of ``service_http_port``."""
        warnings.warn(
            "Settings.metrics_port is renamed Settings.service_http_port",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.service_http_port


def parse_service_url(value: str, name: str = "TRACKER_SERVICE_URL") -> str:
    """A service's base URL: ``http://`` or ``https://``, a host, a port perhaps; no
    trailing slash."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if "@" in (parts.netloc or value):
        # The service takes a bearer token (TRACKER_SERVICE_TOKEN); a password in the URL
        # would be sent instead of it, and printed with every error naming the URL.
        raise ConfigurationError(
            f"{name} must not carry a user or password: set TRACKER_SERVICE_TOKEN instead"
        )
    shown = (parts.scheme + "://" + parts.netloc) if parts.netloc else value[:80]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be the service's URL, e.g. http://127.0.0.1:9464, not {shown!r}"
        )
    try:
        parts.port  # noqa: B018 - a port out of range or not a number raises
    except ValueError:
        raise ConfigurationError(f"{name} has a bad port: {shown!r}") from None
    return url


def parse_search_keys(value: str) -> tuple[str, ...]:
    """``TRACKER_SEARCH_KEYS``: metadata keys, comma-separated (``customer,order``), each
    indexed by ``tracker migrate`` and ``tracker serve``; at most 8."""
    keys: list[str] = []
    for raw in value.split(","):
        if not (key := raw.strip()):
            continue
        try:
            check_search_key(key)
        except ValueError as error:
            raise ConfigurationError(f"TRACKER_SEARCH_KEYS: {error}") from None
        if key not in keys:
            keys.append(key)
    if len(keys) > 8:
        raise ConfigurationError("TRACKER_SEARCH_KEYS names at most 8 keys (each is an index)")
    return tuple(keys)


def parse_audit_retention(value: str) -> float:
    """``TRACKER_AUDIT_RETENTION_DAYS``: whole days, at least the 90 days replays and
    resolved failure groups are kept (the audit log outlives what it speaks of)."""
    least = round(OPERATIONS_RETENTION_SECONDS / 86400)
    if not value.strip().isdigit() or not least <= int(value) <= 36500:
        raise ConfigurationError(
            f"TRACKER_AUDIT_RETENTION_DAYS must be whole days from {least} to 36500, "
            f"not {value[:40]!r}"
        )
    return int(value) * 86400.0


def _parse_group_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise ConfigurationError(
            f"TRACKER_QUORUM_GROUP_SIZE must be a number of nodes, not {value!r}"
        ) from None
    if not 1 <= size <= MAX_QUORUM_GROUP_SIZE:
        raise ConfigurationError(
            f"TRACKER_QUORUM_GROUP_SIZE must be 1..{MAX_QUORUM_GROUP_SIZE}, not {size}"
        )
    return size


def _parse_port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"{name} must be 0..65535, not {port}")
    return port
