"""A MongoDB-backed task tracker for RabbitMQ consumers."""

from __future__ import annotations

from tracker.consumer import TaskContext, TrackedConsumer, tracked
from tracker.db import connect, disconnect
from tracker.errors import (
    ConfigurationError,
    ControlFlow,
    InfrastructureError,
    InvalidTransitionError,
    PartnerAPIError,
    ProcessingError,
    PublishError,
    Reject,
    Retry,
    StaleClaimError,
    StoreUnavailableError,
    TaskFailure,
    TaskNotFoundError,
    TrackerError,
    TransientError,
    ValidationError,
    WaitTimeoutError,
)
from tracker.middleware import Middleware
from tracker.models import ErrorCategory, HistoryEntry, TaskStatus, TaskTracker
from tracker.rabbit import EnqueueResult, Publisher, Worker
from tracker.retry import RetryPolicy
from tracker.settings import Settings
from tracker.states import TRANSITIONS, claim, transition
from tracker.store import create_execution, wait_until_complete

__all__ = [
    "TRANSITIONS",
    "ConfigurationError",
    "ControlFlow",
    "EnqueueResult",
    "ErrorCategory",
    "HistoryEntry",
    "InfrastructureError",
    "InvalidTransitionError",
    "Middleware",
    "PartnerAPIError",
    "ProcessingError",
    "PublishError",
    "Publisher",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Settings",
    "StaleClaimError",
    "StoreUnavailableError",
    "TaskContext",
    "TaskFailure",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskTracker",
    "TrackedConsumer",
    "TrackerError",
    "TransientError",
    "ValidationError",
    "WaitTimeoutError",
    "Worker",
    "claim",
    "connect",
    "create_execution",
    "disconnect",
    "tracked",
    "transition",
    "wait_until_complete",
]
