"""The exception tree: one root, the tracker's own errors, the errors a handler raises to
name a failure's category, and a control-flow branch that is not counted as an error."""

from __future__ import annotations

from typing import ClassVar

from tracker.lifecycle import ErrorCategory, TaskStatus


class TrackerError(Exception):
    """Root of every exception this package raises."""


class ConfigurationError(TrackerError):
    """Settings or arguments that cannot work; the message says what to change."""


class TopologyError(ConfigurationError):
    """A broker queue exists with other arguments than the tracker declares, and cannot be
    brought in step automatically."""


class NotConnectedError(ConfigurationError):
    """The store was used before ``await tracker.connect()``."""


class StoreUnavailableError(TrackerError):
    """MongoDB could not be reached or did not answer in time; the operation may be retried."""


class TaskNotFoundError(TrackerError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"no execution {execution_id!r} in the tracker")
        self.execution_id = execution_id


class NotFoundError(TrackerError, LookupError):
    """No such failure group, replay job or execution; the message names which."""


class ConflictError(TrackerError):
    """The operator's action does not apply in the current state (resolving a resolved
    group, pausing a finished replay); nothing was changed."""


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
    """The broker did not confirm a message; see the message for what was done about it.

    ``maybe_published``: False when the broker certainly does not hold the message (it was
    returned as unroutable, or never sent); True when it may (a lost confirm, a nack, a
    connection lost while waiting). ``task_id``/``execution_id`` name the enqueued execution.
    """

    def __init__(
        self,
        message: str,
        *,
        maybe_published: bool = True,
        task_id: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.maybe_published = maybe_published
        self.task_id = task_id
        self.execution_id = execution_id


class WaitTimeoutError(TrackerError, TimeoutError):
    """``wait_until_complete`` gave up before the task reached a terminal state."""


class TaskFailure(TrackerError):
    """Raised by a handler to fail the current attempt with a known category.

    Subclasses fix the category; the retry policy decides whether the task is retried.
    """

    category: ClassVar[ErrorCategory]
    # True: dead-lettered at once whatever the retry policy says (trying again cannot help).
    final: ClassVar[bool] = False
    # The name recorded as errorType (default: the exception's own class name).
    error_type: str | None = None


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


class UnstorableResult(ProcessingError):
    """The handler returned a value MongoDB cannot store (an integer beyond 64 bits, text that
    is not valid Unicode, over the size bound). The same input gives the same result: never
    retried."""

    final = True

    def __init__(self, why: str) -> None:
        super().__init__(f"result could not be stored: {why}")


class HandlerEscape(TaskFailure):
    """The handler ended with a ``BaseException`` that is not an ``Exception``
    (``GeneratorExit``, a ``CancelledError`` the worker did not ask for, ...)."""

    category = ErrorCategory.UNKNOWN

    def __init__(self, original: BaseException, message: str | None = None) -> None:
        name = type(original).__name__
        super().__init__(message or f"handler raised {name}")
        self.error_type = name


class HandlerInterrupt(TrackerError):
    """The handler raised ``KeyboardInterrupt`` or ``SystemExit``: not a failure of the task.
    Its claim is released, its delivery returned, and the worker stops; ``exit_code`` is
    what the process should exit with (never 0)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"handler raised {type(original).__name__}: the worker stops")
        self.original = original
        code = original.code if isinstance(original, SystemExit) else 130
        self.exit_code = code if isinstance(code, int) and code != 0 else 1


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
