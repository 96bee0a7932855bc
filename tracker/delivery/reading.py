"""Reading a delivery: total. Any bytes with any headers of any type either read as a valid
task or as an ``InvalidMessage`` with a readable reason; nothing else comes out of ``read``.

A valid task has a task identity (the ``x-task-id`` header, else the correlation id, else the
message id) and an execution identity (``x-execution-id``, else the message id, else one
derived from the delivery) that are ids (``validation.id_problem``), a supported contract
version, bounded counts, and a JSON body within the size bound that MongoDB can store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tracker.constants import (
    HEADER_EXECUTION_ID,
    HEADER_MAX_RETRIES,
    HEADER_MESSAGE_VERSION,
    HEADER_RETRY_COUNT,
    HEADER_TASK_ID,
    MAX_PAYLOAD_BYTES,
    MESSAGE_VERSION,
    SUPPORTED_MESSAGE_VERSIONS,
)
from tracker.delivery.envelope import Envelope, InvalidMessage, TaskMessage
from tracker.validation import (
    MAX_COUNT,
    id_problem,
    may_nest_too_deep,
    printable,
    storage_problem,
)

# The payload encoded as BSON, well inside MongoDB's 16 MiB per document (JSON within
# the size bound can take more room as BSON).
MAX_STORED_PAYLOAD_BYTES = 8 * 1024 * 1024


class _Invalid(Exception):
    """Stops reading with a reason (internal)."""


def read(
    envelope: Envelope, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> TaskMessage | InvalidMessage:
    """Check a delivery against the contract; the first problem found is the reason."""
    claimed_task = claimed_execution = None
    try:
        claimed_task, claimed_execution = _claimed_ids(envelope)
        task_id, execution_id = _identity(envelope, claimed_task, claimed_execution)
        if len(envelope.body) > max_payload_bytes:
            raise _Invalid(
                f"payload is {len(envelope.body)} bytes, over the {max_payload_bytes}-byte limit"
            )
        version = _version(envelope.headers)
        retry_count = _count(envelope.headers, HEADER_RETRY_COUNT)
        max_retries = _count(envelope.headers, HEADER_MAX_RETRIES)
        payload = _payload(envelope.body)
    except _Invalid as problem:
        return InvalidMessage(str(problem), claimed_task, claimed_execution)
    return TaskMessage(
        task_id=task_id,
        execution_id=execution_id,
        retry_count=retry_count or 0,
        message_version=version,
        payload=payload,
        max_retries=max_retries,
    )


def _claimed_ids(envelope: Envelope) -> tuple[str | None, str | None]:
    """The task and execution ids the delivery names, where they are usable as ids (kept
    on a rejected delivery's record, for an operator to follow)."""
    headers = envelope.headers
    task = _text(headers.get(HEADER_TASK_ID)) or envelope.correlation_id or envelope.message_id
    execution = _text(headers.get(HEADER_EXECUTION_ID)) or envelope.message_id
    return (
        task if id_problem(task) is None else None,
        execution if id_problem(execution) is None else None,
    )


def _identity(envelope: Envelope, task_id: str | None, execution_id: str | None) -> tuple[str, str]:
    headers = envelope.headers
    # A tracked message names each id twice (header and property): the ids ``_claimed_ids``
    # found usable need no second check.
    usable = {task_id, execution_id}
    for name in (HEADER_TASK_ID, HEADER_EXECUTION_ID):
        raw = headers.get(name)
        if raw is None:
            continue
        text = _text(raw)
        if text is None:
            raise _Invalid(f"header {name} must be a non-empty string, got {_show(raw)}")
        if text not in usable and (problem := id_problem(text, f"header {name}")):
            raise _Invalid(problem)
    for name, value in (
        ("correlation_id", envelope.correlation_id),
        ("message_id", envelope.message_id),
    ):
        if value is None or (type(value) is str and value in usable):
            continue
        if problem := id_problem(value, name):
            raise _Invalid(problem)
    header_execution = _text(headers.get(HEADER_EXECUTION_ID))
    if header_execution and envelope.message_id and header_execution != envelope.message_id:
        raise _Invalid(
            f"header {HEADER_EXECUTION_ID} {printable(header_execution, 80)!r} does not match "
            f"message_id {printable(envelope.message_id, 80)!r}"
        )
    if task_id is None:
        raise _Invalid(
            f"message has no task identity: set the {HEADER_TASK_ID} header, "
            "the correlation_id or the message_id"
        )
    return task_id, execution_id or derived_execution_id(envelope, task_id)


def derived_execution_id(envelope: Envelope, task_id: str) -> str:
    """The execution id of a message that names none: derived from the delivery, so that
    its redeliveries are the same execution (and run once)."""
    digest = hashlib.sha256()
    for part in (
        envelope.queue.encode("utf-8", "backslashreplace"),
        task_id.encode(),
        envelope.body,
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"derived:{digest.hexdigest()[:32]}"


def _version(headers: Mapping[str, Any]) -> str:
    raw = headers.get(HEADER_MESSAGE_VERSION, MESSAGE_VERSION)
    version = _text(raw)
    if version not in SUPPORTED_MESSAGE_VERSIONS:
        supported = ", ".join(sorted(SUPPORTED_MESSAGE_VERSIONS))
        shown = printable(version, 40) if version is not None else _show(raw)
        raise _Invalid(f"unsupported message version {shown!r} (supported: {supported})")
    return version


def _count(headers: Mapping[str, Any], name: str) -> int | None:
    """The header as an integer from 0 to MAX_COUNT, None if absent."""
    if name not in headers:
        return None
    value = headers[name]
    if isinstance(value, bytes | str):
        text = _text(value)
        # ASCII digits only: "²".isdigit() is true, and int() refuses it.
        if text is not None and text.isascii() and text.isdigit() and len(text) <= 6:
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise _Invalid(
            f"header {name} must be a non-negative integer (at most {MAX_COUNT}), "
            f"got {_show(value)}"
        )
    return value


def _payload(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(f"body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        payload = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(
            f"body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise _Invalid("body is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise _Invalid(f"body is not valid JSON: {printable(str(exc), 200)}") from None
    problem = storage_problem(
        payload, "payload", MAX_STORED_PAYLOAD_BYTES, check_nesting=may_nest_too_deep(text)
    )
    if problem is not None:
        raise _Invalid(problem)
    return payload


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON has no such numbers, and other readers of
    # the payload (a Node service, MongoDB tools) would fail on them.
    raise ValueError(f"{name} is not a JSON number")


# One decoder for every delivery (``json.loads`` with an argument makes one per call).
_JSON = json.JSONDecoder(parse_constant=_not_a_number)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value.strip() or None if isinstance(value, str) else None


def _show(value: Any) -> str:
    try:
        shown = repr(value)
    except Exception:
        shown = "<unprintable>"
    return printable(f"{type(value).__name__} {shown}", 120)
