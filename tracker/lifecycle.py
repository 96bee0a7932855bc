"""The lifecycle of an execution: its statuses, the error categories of the Mongoose
TaskTracker schema, and the transition table that is the single source of truth for status
changes. Pure data: the writes that apply the table are in ``tracker.store.transitions``."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class TaskStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DLQ = "dlq"
    ARCHIVED = "archived"

    @property
    def is_active(self) -> bool:
        """Queued or processing: the execution still has work ahead of it."""
        return self in (TaskStatus.QUEUED, TaskStatus.PROCESSING)


class ErrorCategory(StrEnum):
    TRANSIENT = "transient"
    VALIDATION = "validation"
    PROCESSING = "processing"
    INFRASTRUCTURE = "infrastructure"
    PARTNER_API = "partner_api"
    UNKNOWN = "unknown"


Q, P, C, F, D, A = (
    TaskStatus.QUEUED,
    TaskStatus.PROCESSING,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.DLQ,
    TaskStatus.ARCHIVED,
)

TRANSITIONS: Final[Mapping[TaskStatus, frozenset[TaskStatus]]] = MappingProxyType(
    {
        Q: frozenset({P}),
        # failed: this attempt failed and a retry follows as a new execution
        P: frozenset({C, F, D}),
        D: frozenset({A}),
        C: frozenset(),
        F: frozenset(),
        A: frozenset(),
    }
)

# Statuses an execution may be created in: queued by a publisher; processing when a message
# with no record is tracked on arrival; dlq when such a message is rejected on arrival.
INITIAL_STATUSES: Final = frozenset({Q, P, D})

# Statuses after which the task has nothing more to do (a failed attempt has a retry).
FINAL_STATUSES: Final = frozenset({C, D, A})

# The timestamp field each status sets when entered.
ENTERED_AT: Final[Mapping[TaskStatus, str]] = MappingProxyType(
    {P: "processingStartedAt", C: "completedAt", F: "failedAt", D: "failedAt", A: "archivedAt"}
)


def sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses from which ``target`` may be entered."""
    return frozenset(status for status, targets in TRANSITIONS.items() if target in targets)
