"""A MongoDB-backed task tracker for RabbitMQ consumers.

The public names below are loaded on first use, so ``import tracker`` (and ``tracker
--help``) costs no import of the MongoDB driver, the ODM or a RabbitMQ client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "TRANSITIONS": "tracker.lifecycle",
    "TaskStatus": "tracker.lifecycle",
    "ErrorCategory": "tracker.lifecycle",
    "ConfigurationError": "tracker.errors",
    "ControlFlow": "tracker.errors",
    "InfrastructureError": "tracker.errors",
    "InvalidTransitionError": "tracker.errors",
    "HandlerInterrupt": "tracker.errors",
    "UnstorableResult": "tracker.errors",
    "PartnerAPIError": "tracker.errors",
    "ProcessingError": "tracker.errors",
    "PublishError": "tracker.errors",
    "Reject": "tracker.errors",
    "Retry": "tracker.errors",
    "StaleClaimError": "tracker.errors",
    "StoreUnavailableError": "tracker.errors",
    "TaskFailure": "tracker.errors",
    "TaskNotFoundError": "tracker.errors",
    "TrackerError": "tracker.errors",
    "TransientError": "tracker.errors",
    "ValidationError": "tracker.errors",
    "WaitTimeoutError": "tracker.errors",
    "Settings": "tracker.settings",
    "RetryPolicy": "tracker.retry",
    "Middleware": "tracker.middleware",
    "TaskContext": "tracker.consumer",
    "TrackedConsumer": "tracker.consumer",
    "QueueRules": "tracker.consumer",
    "tracked": "tracker.consumer",
    "HistoryEntry": "tracker.models",
    "TaskTracker": "tracker.models",
    "connect": "tracker.store.connection",
    "disconnect": "tracker.store.connection",
    "claim": "tracker.store.claims",
    "transition": "tracker.store.transitions",
    "create_execution": "tracker.store.creation",
    "wait_until_complete": "tracker.store.executions",
    "EnqueueResult": "tracker.enqueue",
    "Publisher": "tracker.rabbit.publisher",
    "Worker": "tracker.rabbit.worker",
}

__all__ = [
    "TRANSITIONS",
    "ConfigurationError",
    "ControlFlow",
    "EnqueueResult",
    "ErrorCategory",
    "HandlerInterrupt",
    "HistoryEntry",
    "InfrastructureError",
    "InvalidTransitionError",
    "Middleware",
    "PartnerAPIError",
    "ProcessingError",
    "PublishError",
    "Publisher",
    "QueueRules",
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
    "UnstorableResult",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from tracker.consumer import QueueRules, TaskContext, TrackedConsumer, tracked
    from tracker.enqueue import EnqueueResult
    from tracker.errors import (
        ConfigurationError,
        ControlFlow,
        HandlerInterrupt,
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
        UnstorableResult,
        ValidationError,
        WaitTimeoutError,
    )
    from tracker.lifecycle import TRANSITIONS, ErrorCategory, TaskStatus
    from tracker.middleware import Middleware
    from tracker.models import HistoryEntry, TaskTracker
    from tracker.rabbit.publisher import Publisher
    from tracker.rabbit.worker import Worker
    from tracker.retry import RetryPolicy
    from tracker.settings import Settings
    from tracker.store.claims import claim
    from tracker.store.connection import connect, disconnect
    from tracker.store.creation import create_execution
    from tracker.store.executions import wait_until_complete
    from tracker.store.transitions import transition
