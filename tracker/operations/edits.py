"""Edit and retry: one dead letter run again with a payload the operator corrected, as a
new execution linked to it (``sourceExecutionId``), the edit written to the audit log."""

from __future__ import annotations

import json
from typing import Any, Final

from tracker.constants import MAX_PAYLOAD_BYTES
from tracker.errors import ConflictError, NotFoundError
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.operations import audit, groups
from tracker.operations.actors import Actor
from tracker.operations.redaction import redact
from tracker.operations.republish import (
    Publish,
    archive_sources,
    new_execution,
    publish_execution,
)
from tracker.validation import check_id, storable_text, storage_problem

# How much of each payload (before and after) the audit entry keeps, as JSON text.
AUDITED_PAYLOAD_CHARS: Final = 8 * 1024


async def retry_with_payload(
    execution_id: str,
    payload: Any,
    *,
    actor: Actor,
    reason: str,
    publish: Publish,
    redact_fields: frozenset[str] = frozenset(),
) -> TaskTracker:
    """Run the dead letter ``execution_id``'s task again with ``payload``: a new execution
    (next ``retryCount``, ``sourceExecutionId`` naming the dead letter) is published, then
    the dead letter is archived. Audited as ``edit_retry`` with the payload before and after
    (redacted). ``ValueError`` for a payload that is not JSON or over the size bound,
    ``NotFoundError``, ``ConflictError`` when the execution is not a dead letter or its task
    already has an active execution."""
    check_id(execution_id, "execution_id")
    reason = _reason(reason)
    actor.require_operator()
    body = _checked(payload)
    source = await TaskTracker.find_execution(execution_id)
    if source is None:
        raise NotFoundError(f"no execution {execution_id!r}")
    if source.status is not TaskStatus.DLQ:
        raise ConflictError(
            f"execution {execution_id} is {source.status.value}: only a dead letter can be "
            "edited and retried"
        )
    selection = {
        "execution_id": execution_id,
        "task_id": source.task_id,
        "queue": source.queue_name,
    }
    async with audit.audited(
        actor,
        "edit_retry",
        f"execution:{execution_id}",
        selection=selection,
        reason=reason,
        redact_fields=redact_fields,
    ) as outcome:
        outcome.result["payload_before"] = _excerpt(source.payload, redact_fields)
        outcome.result["payload_after"] = _excerpt(json.loads(body), redact_fields)
        created = await new_execution(
            source, payload=payload, note=f"edited retry of {execution_id} by {actor.name}"
        )
        new = created.execution
        if created.deduplicated:
            raise ConflictError(
                f"task {source.task_id} already has an active execution {new.execution_id} "
                f"({new.status.value})"
            )
        outcome.result["new_execution_id"] = new.execution_id
        outcome.result["confirmed"] = await publish_execution(new, publish)
        settled = await archive_sources(
            [execution_id], next_execution_id=new.execution_id, archived_by=actor.name
        )
        await groups.settle(settled)
        return new


def _reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a string, not {type(reason).__name__}")
    if not reason.strip():
        raise ValueError("a reason is required: say why the payload was edited")
    return storable_text(reason.strip(), audit.MAX_REASON_CHARS)


def _checked(payload: Any) -> str:
    """``payload`` as strict JSON text (no NaN or Infinity), within the payload bound and
    storable by MongoDB; ``ValueError`` saying why not."""
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"the payload is not JSON: {type(error).__name__}: {error}") from None
    if len(body.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"the payload is over the {MAX_PAYLOAD_BYTES}-byte limit")
    problem = storage_problem(payload, "the payload", MAX_PAYLOAD_BYTES)
    if problem is not None:
        raise ValueError(problem)
    return body


def _excerpt(payload: Any, fields: frozenset[str]) -> str:
    text = json.dumps(redact(payload, fields), ensure_ascii=False, default=str)
    return storable_text(text, AUDITED_PAYLOAD_CHARS)
