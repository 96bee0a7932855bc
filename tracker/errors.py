"""The exception tree: one root, the tracker's own errors, the errors a handler raises to
name a failure's category, and a control-flow branch that is not counted as an error."""

from __future__ import annotations

from typing import ClassVar

from tracker.lifecycle import ErrorCategory, TaskStatus


class TrackerError(Exception):
    """Root of every exception this package raises."""


class ConfigurationError(TrackerError):
    """Settings or arguments that cannot work; the message says what to change."""


class NotConnectedError(ConfigurationError):
    """The store was used before ``await tracker.connect()``."""


class StoreUnavailableError(TrackerError):
    """MongoDB could not be reached or did not answer in time; the operation may be retried."""


class TaskNotFoundError(TrackerError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"no execution {execution_id!r} in the tracker")
        self.execution_id = execution_id


class InvalidTransitionError(TrackerError):
    """The transition table does not allow this change; nothing was written."""

    def __init__(self, execution_id: str, current: TaskStatus, target: TaskStatus) -> None:
        super().__init__(
            f"execution {execution_id!r} is {current.value!r}; "
            f"the transition table does not allow {current.value!r} -> {target.value!r}"
        )
        self.execution_id = execution_id
        self.current = current
        self.target = target


class StaleClaimError(TrackerError):
    """The caller's claim on an execution was superseded (timed out or taken over); its
    outcome is refused so it cannot overwrite the newer one."""

    def __init__(self, execution_id: str, current: TaskStatus) -> None:
        super().__init__(
            f"execution {execution_id!r} is no longer held by this claim (now {current.value!r})"
        )
        self.execution_id = execution_id
        self.current = current


class PublishError(TrackerError):
    """The broker did not confirm a message; see the message for what was done about it."""


class WaitTimeoutError(TrackerError, TimeoutError):
    """``wait_until_complete`` gave up before the task reached a terminal state."""


class TaskFailure(TrackerError):
    """Raised by a handler to fail the current attempt with a known category.

    Subclasses fix the category; the retry policy decides whether the task is retried.
    """

    category: ClassVar[ErrorCategory]


class TransientError(TaskFailure):
    """Timeouts, temporary unavailability: retried."""

    category = ErrorCategory.TRANSIENT


class ValidationError(TaskFailure):
    """The input can never succeed: dead-lettered at once."""

    category = ErrorCategory.VALIDATION


class ProcessingError(TaskFailure):
    """Business logic or data inconsistency: dead-lettered at once."""

    category = ErrorCategory.PROCESSING


class InfrastructureError(TaskFailure):
    """Database, filesystem or resource errors: retried."""

    category = ErrorCategory.INFRASTRUCTURE


class TaskTimeout(InfrastructureError):
    """The execution outlived its consumer's timeout (raised by the tracker, not a handler)."""


class PartnerAPIError(TaskFailure):
    """An external partner API failed: retried."""

    category = ErrorCategory.PARTNER_API


class ControlFlow(TrackerError):
    """Base of exceptions a handler raises to steer the task, not to report an error.
    Metrics do not count these as errors."""


class Retry(ControlFlow):
    """Retry this task after ``delay`` seconds (default: the policy's backoff).
    The attempt counts towards ``max_retries``."""

    def __init__(self, reason: str = "retry requested by the handler", delay: float | None = None):
        super().__init__(reason)
        self.delay = delay


class Reject(ControlFlow):
    """Dead-letter this task now, without retrying, recording ``reason``."""

    def __init__(
        self, reason: str, category: ErrorCategory | str = ErrorCategory.PROCESSING
    ) -> None:
        super().__init__(reason)
        self.category = ErrorCategory(category)
