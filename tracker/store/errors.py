"""The one place store errors are classified.

*Transient*: MongoDB is out of reach or busy for now (network, server selection, a primary
stepping down, a write concern or an operation that timed out, anything the driver labels
``RetryableWriteError``/``TransientTransactionError``). The delivery is not acked; it is
tried again later.

*Permanent*: the same request will fail every time (a document too large, a value BSON cannot
encode, a write error, a bad query, an unexpected duplicate key). Trying again would rerun the
handler forever, so the execution is dead-lettered with the reason instead.
"""

from __future__ import annotations

from typing import Final

import bson.errors
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WTimeoutError,
)

# Server error codes that mean "not now": see the MongoDB error codes reference.
TRANSIENT_CODES: Final = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed (wtimeout)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
TRANSIENT_LABELS: Final = frozenset({"RetryableWriteError", "TransientTransactionError"})
_TRANSIENT_TYPES = (
    AutoReconnect,
    ConnectionFailure,
    ServerSelectionTimeoutError,
    NotPrimaryError,
    NetworkTimeout,
    ExecutionTimeout,
    WaitQueueTimeoutError,
    WTimeoutError,
    WriteConcernError,
)
# Errors a store call raises that are not PyMongo's: the BSON encoder's.
ENCODING_ERRORS: Final = (bson.errors.BSONError, OverflowError, UnicodeEncodeError)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means MongoDB cannot answer now (try again later), as opposed to a
    request that will never succeed."""
    if isinstance(error, ENCODING_ERRORS):
        return False
    if not isinstance(error, PyMongoError):
        return False
    if isinstance(error, _TRANSIENT_TYPES) or getattr(error, "timeout", False):
        return True
    if any(error.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    code = getattr(error, "code", None)
    if code in TRANSIENT_CODES:
        return True
    details = getattr(error, "details", None) or {}
    concern = details.get("writeConcernError") if isinstance(details, dict) else None
    return isinstance(concern, dict) and concern.get("code") in TRANSIENT_CODES


def is_store_error(error: BaseException) -> bool:
    """Whether ``error`` came from a store call (a driver or an encoding error)."""
    return isinstance(error, (PyMongoError, *ENCODING_ERRORS))


def describe(error: BaseException) -> str:
    """A short, safe account of a store error for a record or a log line."""
    code = getattr(error, "code", None)
    text = str(error).splitlines()[0] if str(error) else ""
    text = text.encode("utf-8", "backslashreplace").decode()[:300]
    return f"{type(error).__name__}{f' (code {code})' if code is not None else ''}: {text}"
