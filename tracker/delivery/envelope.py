"""The message contract, free of any transport: what a delivery carries, what a consumer
publishes, and what reading a delivery yields (``reading.read``).

A tracked message is a JSON body whose AMQP ``message_id`` is the executionId and
``correlation_id`` the taskId, with headers repeating both plus the retry count and the
contract version. A message from a plain producer needs only an identity: an ``x-task-id``
header, a correlation id or a message id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker.constants import (
    CONTENT_TYPE,
    HEADER_EXECUTION_ID,
    HEADER_MAX_RETRIES,
    HEADER_MESSAGE_VERSION,
    HEADER_RETRY_COUNT,
    HEADER_TASK_ID,
    MAX_PAYLOAD_BYTES,
    MESSAGE_VERSION,
)
from tracker.errors import ConfigurationError, TrackerError


@dataclass(frozen=True)
class Envelope:
    """One delivery as the core sees it."""

    queue: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False


@dataclass(frozen=True)
class OutgoingMessage:
    """A persistent message for the default exchange, routed to queue ``routing_key``;
    ``expiration`` (seconds) is a per-message TTL."""

    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str
    correlation_id: str
    content_type: str = CONTENT_TYPE
    expiration: float | None = None


@dataclass(frozen=True)
class TaskMessage:
    """A delivery that passed every check."""

    task_id: str
    execution_id: str
    retry_count: int
    message_version: str
    payload: Any
    max_retries: int | None


@dataclass(frozen=True)
class InvalidMessage:
    """A delivery that can never be processed: why, and the ids it claims where they can be
    read (it owns no execution: its record gets an id of its own, see ``rejection``)."""

    reason: str
    task_id: str | None = None
    execution_id: str | None = None


class PayloadNotJSONError(TrackerError, TypeError):
    """A payload JSON cannot encode (a set, an object, NaN): the caller's value, refused
    before anything is written."""


class PayloadTooLargeError(ConfigurationError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes encoded, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def encode_payload(payload: Any, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The JSON message body for ``payload``; raises if it is not JSON or over ``limit``."""
    try:
        body = json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadNotJSONError(f"payload is not JSON-serialisable: {exc}") from exc
    if len(body) > limit:
        raise PayloadTooLargeError(len(body), limit)
    return body


def encode_stored_payload(payload: Any) -> bytes:
    """The message body for a payload the tracker already holds (a retry, a republish, a
    replay): encoded as it is, without the bounds of ``encode_payload``, so what was
    accepted once (up to the stored bound, NaN from an earlier version included) is never
    refused when its task runs again."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadNotJSONError(f"stored payload is not JSON-serialisable: {exc}") from exc


def task_message(
    queue: str,
    payload_body: bytes,
    *,
    task_id: str,
    execution_id: str,
    retry_count: int = 0,
    max_retries: int | None = None,
    routing_key: str | None = None,
) -> OutgoingMessage:
    """The outgoing form of one execution of a task."""
    headers: dict[str, Any] = {
        HEADER_TASK_ID: task_id,
        HEADER_EXECUTION_ID: execution_id,
        HEADER_RETRY_COUNT: retry_count,
        HEADER_MESSAGE_VERSION: MESSAGE_VERSION,
    }
    if max_retries is not None:
        headers[HEADER_MAX_RETRIES] = max_retries
    return OutgoingMessage(
        routing_key=routing_key or queue,
        body=payload_body,
        headers=headers,
        message_id=execution_id,
        correlation_id=task_id,
    )
