"""A MongoDB-backed task tracker for RabbitMQ consumers."""

from __future__ import annotations

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
from tracker.models import ErrorCategory, HistoryEntry, TaskStatus, TaskTracker
from tracker.settings import Settings
from tracker.states import TRANSITIONS, claim, transition
from tracker.store import create_execution, wait_until_complete

__all__ = [
    "TRANSITIONS",
    "ConfigurationError",
    "ControlFlow",
    "ErrorCategory",
    "HistoryEntry",
    "InfrastructureError",
    "InvalidTransitionError",
    "PartnerAPIError",
    "ProcessingError",
    "PublishError",
    "Reject",
    "Retry",
    "Settings",
    "StaleClaimError",
    "StoreUnavailableError",
    "TaskFailure",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskTracker",
    "TrackerError",
    "TransientError",
    "ValidationError",
    "WaitTimeoutError",
    "claim",
    "connect",
    "create_execution",
    "disconnect",
    "transition",
    "wait_until_complete",
]
