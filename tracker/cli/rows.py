"""The rows and records the commands print, built from the API's shapes (``tracker.web.api``
schemas), which both backends return: so a command prints the same whether it reads
MongoDB or a service. Keys are the stored documents' camelCase names, as ``--json`` has
always printed them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.web.api.schemas import (
        Audit,
        Execution,
        ExecutionDetail,
        Group,
        Replay,
        ReplayItemOut,
    )

# The API's snake_case names whose stored name is not their camelCase form.
_RENAMED = {"queue": "queueName", "group_id": "groupId"}


def camel(name: str) -> str:
    if name in _RENAMED:
        return _RENAMED[name]
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def execution_row(execution: Execution) -> dict[str, Any]:
    """One attempt, as ``tracker status`` lists a task's attempts."""
    return {
        "retryCount": execution.retry_count,
        "executionId": execution.execution_id,
        "taskId": execution.task_id,
        "queueName": execution.queue,
        "status": execution.status,
        "enqueuedAt": execution.enqueued_at,
        "processingStartedAt": execution.processing_started_at,
        "finishedAt": execution.completed_at or execution.failed_at,
        "archivedAt": execution.archived_at,
        "errorCategory": execution.error_category,
        "errorMessage": execution.error_message,
    }


STATUS_COLUMNS = [
    ("retryCount", "#"),
    ("executionId", "EXECUTION"),
    ("status", "STATUS"),
    ("enqueuedAt", "ENQUEUED"),
    ("processingStartedAt", "STARTED"),
    ("finishedAt", "FINISHED"),
    ("errorCategory", "CATEGORY"),
    ("errorMessage", "MESSAGE"),
]


def stuck_row(execution: Execution) -> dict[str, Any]:
    return {
        **execution_row(execution),
        "claimedBy": execution.claimed_by,
        "timeoutSeconds": execution.timeout_seconds,
        "timeoutAt": execution.timeout_at,
    }


STUCK_COLUMNS = [
    ("executionId", "EXECUTION"),
    ("taskId", "TASK"),
    ("queueName", "QUEUE"),
    ("processingStartedAt", "STARTED"),
    ("timeoutAt", "DEADLINE"),
    ("timeoutSeconds", "TIMEOUT"),
    ("claimedBy", "WORKER"),
]


def entry_row(execution: Execution) -> dict[str, Any]:
    """One dead letter, as the ``tracker dlq`` commands list them."""
    return {
        "executionId": execution.execution_id,
        "taskId": execution.task_id,
        "queueName": execution.queue,
        "retryCount": execution.retry_count,
        "errorCategory": execution.error_category,
        "errorType": execution.error_type,
        "errorMessage": execution.error_message,
        "enqueuedAt": execution.enqueued_at,
        "failedAt": execution.failed_at,
        "group": execution.group_id,
    }


ENTRY_COLUMNS = [
    ("executionId", "EXECUTION"),
    ("taskId", "TASK"),
    ("queueName", "QUEUE"),
    ("errorCategory", "CATEGORY"),
    ("failedAt", "FAILED"),
    ("group", "GROUP"),
    ("errorMessage", "MESSAGE"),
]


def record(execution: ExecutionDetail) -> dict[str, Any]:
    """One execution in full, as ``tracker dlq show`` prints it."""
    data = execution.model_dump(mode="json")
    data["history"] = [{camel(k): v for k, v in entry.items()} for entry in data["history"]]
    return {camel(name): value for name, value in data.items()}


def group_row(group: Group) -> dict[str, Any]:
    row = {
        "id": group.id,
        "state": group.state,
        "muted": group.muted,
        "count": group.count,
        "queue": group.queue,
        "category": group.category,
        "errorType": group.error_type,
        "signature": group.signature,
        "sampleMessage": group.sample_message,
        "sampleExecutionId": group.sample_execution_id,
        "firstSeen": group.first_seen,
        "lastSeen": group.last_seen,
        "resolvedAt": group.resolved_at,
        "resolvedBy": group.resolved_by,
    }
    if group.dead_letters_left is not None:
        row["deadLettersLeft"] = group.dead_letters_left
    return row


GROUP_COLUMNS = [
    ("id", "GROUP"),
    ("state", "STATE"),
    ("muted", "MUTED"),
    ("count", "COUNT"),
    ("queue", "QUEUE"),
    ("category", "CATEGORY"),
    ("errorType", "TYPE"),
    ("lastSeen", "LAST SEEN"),
    ("signature", "MESSAGE"),
]


def job_row(job: Replay) -> dict[str, Any]:
    chosen = job.selection
    selection = {
        "groupId": chosen.group_id,
        "queue": chosen.queue,
        "status": chosen.status or "dlq",
        "since": chosen.since,
        "until": chosen.until,
        "taskIds": chosen.task_ids,
        "executionIds": chosen.execution_ids,
        "category": chosen.category,
    }
    return {
        "id": job.id,
        "state": job.state,
        "dryRun": job.dry_run,
        "selection": {k: v for k, v in selection.items() if v not in (None, [])},
        "reason": job.reason,
        "matched": job.matched,
        "pending": job.pending,
        "republished": job.republished,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "skipped": job.skipped,
        "ratePerSecond": job.rate_per_second,
        "canarySize": job.canary_size,
        "canaryMaxFailureShare": job.canary_max_failure_share,
        "stoppedReason": job.stopped_reason,
        "createdBy": job.created_by,
        "createdAt": job.created_at,
        "finishedAt": job.finished_at,
    }


JOB_COLUMNS = [
    ("id", "REPLAY"),
    ("state", "STATE"),
    ("matched", "MATCHED"),
    ("republished", "REPUBLISHED"),
    ("succeeded", "SUCCEEDED"),
    ("failed", "FAILED"),
    ("skipped", "SKIPPED"),
    ("createdBy", "BY"),
    ("createdAt", "CREATED"),
    ("reason", "REASON"),
]


def item_row(item: ReplayItemOut) -> dict[str, Any]:
    return {
        "position": item.position,
        "taskId": item.task_id,
        "executionId": item.execution_id,
        "outcome": item.outcome,
        "newExecutionId": item.new_execution_id,
        "detail": item.detail,
        "supersedes": list(item.supersedes),
    }


ITEM_COLUMNS = [
    ("position", "#"),
    ("taskId", "TASK"),
    ("executionId", "DEAD LETTER"),
    ("outcome", "OUTCOME"),
    ("newExecutionId", "NEW EXECUTION"),
    ("detail", "DETAIL"),
]


def audit_row(entry: Audit) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "role": entry.role,
        "via": entry.via,
        "action": entry.action,
        "target": entry.target,
        "selection": entry.selection,
        "reason": entry.reason,
        "result": entry.result,
    }


AUDIT_COLUMNS = [
    ("at", "AT"),
    ("actor", "ACTOR"),
    ("via", "VIA"),
    ("action", "ACTION"),
    ("target", "TARGET"),
    ("reason", "REASON"),
    ("result", "RESULT"),
]
