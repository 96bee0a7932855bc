"""Names shared by the store, the RabbitMQ adapters and the CLI, kept in one place."""

from __future__ import annotations

from typing import Final

COLLECTION: Final = "task_trackers"
DEFAULT_DATABASE: Final = "tracker"
DEFAULT_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_METRICS_PORT: Final = 9464

# The message contract: AMQP message_id is the executionId, correlation_id the taskId, and these
# headers repeat both with the retry count and the contract version.
HEADER_TASK_ID: Final = "x-task-id"
HEADER_EXECUTION_ID: Final = "x-execution-id"
HEADER_RETRY_COUNT: Final = "x-retry-count"
HEADER_MESSAGE_VERSION: Final = "x-message-version"
HEADER_MAX_RETRIES: Final = "x-max-retries"
# Set on messages copied to a `.dlq` queue, so an operator reading the queue sees why.
HEADER_ERROR_CATEGORY: Final = "x-error-category"
HEADER_ERROR_MESSAGE: Final = "x-error-message"

MESSAGE_VERSION: Final = "1.0"
SUPPORTED_MESSAGE_VERSIONS: Final = frozenset({"1.0"})
CONTENT_TYPE: Final = "application/json"

DLQ_SUFFIX: Final = ".dlq"
RETRY_INFIX: Final = ".retry."

# Bounds on what one document holds, so a noisy task cannot grow it without limit.
HISTORY_LIMIT: Final = 50
MAX_PAYLOAD_BYTES: Final = 1024 * 1024
MAX_RESULT_BYTES: Final = 64 * 1024
MAX_ERROR_STACK_CHARS: Final = 8 * 1024
MAX_ERROR_MESSAGE_CHARS: Final = 2 * 1024

DEFAULT_MAX_RETRIES: Final = 5  # the Mongoose schema's default; consumers usually set their own
DEFAULT_CONSUMER_MAX_RETRIES: Final = 3
DEFAULT_TIMEOUT_SECONDS: Final = 300.0
DEFAULT_RETENTION_SECONDS: Final = 7 * 86400.0  # completed executions
DEFAULT_ARCHIVED_RETENTION_SECONDS: Final = 30 * 86400.0  # failed attempts, archived entries
DEFAULT_AUTO_ARCHIVE_SECONDS: Final = 7 * 86400.0  # dead letters, then archived
# The operator console's records: finished replays and resolved failure groups are kept
# this long; the audit log longest (TRACKER_AUDIT_RETENTION_DAYS, never shorter than these).
OPERATIONS_RETENTION_SECONDS: Final = 90 * 86400.0
DEFAULT_AUDIT_RETENTION_SECONDS: Final = 365 * 86400.0
# Lists count what matches up to this many, then say "more than".
MAX_COUNTED: Final = 10_000
DEADLINE_INFIX: Final = ".deadline."
TIMEOUTS_SUFFIX: Final = ".timeouts"


def dlq_name(queue: str) -> str:
    """The dead-letter queue that belongs to work queue ``queue``."""
    return f"{queue}{DLQ_SUFFIX}"


def deadline_queue_name(queue: str, timeout_ms: int) -> str:
    """The delay queue holding a deadline message for each execution of ``queue`` that
    started processing; it expires into ``timeouts_queue_name(queue)``."""
    return f"{queue}{DEADLINE_INFIX}{_duration_label(timeout_ms)}"


def timeouts_queue_name(queue: str) -> str:
    return f"{queue}{TIMEOUTS_SUFFIX}"


def retry_queue_name(queue: str, delay_ms: int) -> str:
    """The delay queue of ``queue`` whose messages wait ``delay_ms`` before returning to it."""
    return f"{queue}{RETRY_INFIX}{_duration_label(delay_ms)}"


def _duration_label(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
