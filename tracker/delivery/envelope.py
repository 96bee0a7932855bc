"""The message contract, free of any transport: what a delivery carries and how it is read.

A tracked message is a JSON body whose AMQP ``message_id`` is the executionId and
``correlation_id`` the taskId, with headers repeating both plus the retry count and the
contract version. A message from a plain producer needs only an identity: an ``x-task-id``
header, a correlation id or a message id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker.constants import (
    CONTENT_TYPE,
    HEADER_ERROR_CATEGORY,
    HEADER_ERROR_MESSAGE,
    HEADER_EXECUTION_ID,
    HEADER_MAX_RETRIES,
    HEADER_MESSAGE_VERSION,
    HEADER_RETRY_COUNT,
    HEADER_TASK_ID,
    MAX_PAYLOAD_BYTES,
    MESSAGE_VERSION,
    SUPPORTED_MESSAGE_VERSIONS,
)
from tracker.errors import ConfigurationError


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
    """A delivery that can never be processed, with the identity it could be given."""

    task_id: str
    execution_id: str
    reason: str


class PayloadTooLargeError(ConfigurationError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes encoded, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def encode_payload(payload: Any, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The JSON message body for ``payload``; raises if it is not JSON or over ``limit``."""
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"payload is not JSON-serialisable: {exc}") from exc
    if len(body) > limit:
        raise PayloadTooLargeError(len(body), limit)
    return body


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


def dead_letter_copy(
    envelope: Envelope, routing_key: str, category: str, message: str
) -> OutgoingMessage:
    """The delivery as it arrived, for a ``.dlq`` queue, with headers saying why it is there."""
    headers = {str(k): _plain(v) for k, v in envelope.headers.items()}
    headers[HEADER_ERROR_CATEGORY] = category
    headers[HEADER_ERROR_MESSAGE] = message[:1024]
    return OutgoingMessage(
        routing_key=routing_key,
        body=envelope.body,
        headers=headers,
        message_id=envelope.message_id or str(headers.get(HEADER_EXECUTION_ID, "")),
        correlation_id=envelope.correlation_id or str(headers.get(HEADER_TASK_ID, "")),
    )


def with_error(message: OutgoingMessage, category: str, text: str) -> OutgoingMessage:
    """``message`` with the headers saying why it is dead-lettered."""
    headers = {
        **message.headers,
        HEADER_ERROR_CATEGORY: category,
        HEADER_ERROR_MESSAGE: text[:1024],
    }
    return OutgoingMessage(
        routing_key=message.routing_key,
        body=message.body,
        headers=headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
    )


def read(
    envelope: Envelope, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> TaskMessage | InvalidMessage:
    """Check a delivery against the contract; the first problem found is the reason given."""
    task_id, execution_id, identity_problem = _identity(envelope)

    def invalid(reason: str) -> InvalidMessage:
        return InvalidMessage(task_id=task_id, execution_id=execution_id, reason=reason)

    if identity_problem:
        return invalid(identity_problem)
    if len(envelope.body) > max_payload_bytes:
        return invalid(
            f"payload is {len(envelope.body)} bytes, over the {max_payload_bytes}-byte limit"
        )
    version = _text(envelope.headers.get(HEADER_MESSAGE_VERSION, MESSAGE_VERSION))
    if version not in SUPPORTED_MESSAGE_VERSIONS:
        supported = ", ".join(sorted(SUPPORTED_MESSAGE_VERSIONS))
        return invalid(f"unsupported message version {version!r} (supported: {supported})")
    retry_count = _count(envelope.headers, HEADER_RETRY_COUNT, default=0)
    if isinstance(retry_count, str):
        return invalid(retry_count)
    max_retries = _count(envelope.headers, HEADER_MAX_RETRIES, default=None)
    if isinstance(max_retries, str):
        return invalid(max_retries)
    try:
        payload = json.loads(envelope.body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return invalid(f"body is not UTF-8 text: {exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return invalid(f"body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")
    return TaskMessage(
        task_id=task_id,
        execution_id=execution_id,
        retry_count=retry_count or 0,
        message_version=version or MESSAGE_VERSION,
        payload=payload,
        max_retries=max_retries,
    )


def _identity(envelope: Envelope) -> tuple[str, str, str | None]:
    """(taskId, executionId, problem). Ids are generated where the message gives none, so
    even a rejected message gets a record an operator can find."""
    problem = None
    raw_task = envelope.headers.get(HEADER_TASK_ID)
    task_id = _text(raw_task) if raw_task is not None else None
    if raw_task is not None and not task_id:
        problem = f"header {HEADER_TASK_ID} must be a non-empty string, got {_show(raw_task)}"
    task_id = task_id or envelope.correlation_id or envelope.message_id
    raw_execution = envelope.headers.get(HEADER_EXECUTION_ID)
    execution_id = _text(raw_execution) if raw_execution is not None else None
    if raw_execution is not None and not execution_id and problem is None:
        problem = (
            f"header {HEADER_EXECUTION_ID} must be a non-empty string, got {_show(raw_execution)}"
        )
    if (
        execution_id
        and envelope.message_id
        and execution_id != envelope.message_id
        and problem is None
    ):
        problem = (
            f"header {HEADER_EXECUTION_ID} {execution_id!r} does not match "
            f"message_id {envelope.message_id!r}"
        )
    execution_id = execution_id or envelope.message_id or str(uuid.uuid4())
    if task_id is None:
        task_id = f"{envelope.queue}:unidentified:{execution_id}"
        problem = problem or (
            f"message has no task identity: set the {HEADER_TASK_ID} header, "
            "the correlation_id or the message_id"
        )
    return task_id, execution_id, problem


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value.strip() or None if isinstance(value, str) else None


def _count(headers: Mapping[str, Any], name: str, default: int | None) -> int | str | None:
    """The header as a non-negative integer, ``default`` if absent, or the problem as text."""
    if name not in headers:
        return default
    value = headers[name]
    if isinstance(value, bytes | str):
        text = _text(value)
        value = int(text) if text is not None and text.isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"header {name} must be a non-negative integer, got {_show(value)}"
    return value


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]


def _plain(value: Any) -> Any:
    """Header values as AMQP tables accept them back (aio-pika may hand us bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
