"""Server errors in MongoDB's reply shape, so PyMongo maps them to its own exception classes."""

from __future__ import annotations

from typing import Any, Final

CODE_NAMES: Final = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    28: "PathNotViable",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    51: "DollarPrefixedFieldName",
    53: "InvalidIdField",
    59: "CommandNotFound",
    64: "WriteConcernFailed",
    66: "ImmutableField",
    67: "CannotCreateIndex",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    79: "UnknownReplWriteConcern",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    100: "UnsatisfiableWriteConcern",
    112: "WriteConflict",
    115: "CommandNotSupported",
    134: "ReadConcernMajorityNotAvailableYet",
    168: "InvalidPipelineOperator",
    189: "PrimarySteppedDown",
    251: "NoSuchTransaction",
    262: "ExceededTimeLimit",
    352: "UnsupportedOpQueryCommand",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}

# Codes for which a real server labels a failed retryable write RetryableWriteError itself.
RETRYABLE_WRITE_CODES: Final = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


def code_name(code: int) -> str:
    return CODE_NAMES.get(code, f"Location{code}")


class CommandError(Exception):
    """A command (or one write of a batch) that fails with a server error code."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def reply(self) -> dict[str, Any]:
        """The ``{ok: 0}`` reply of a failed command."""
        return {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": code_name(self.code),
            **self.extra,
        }

    def write_error(self, index: int) -> dict[str, Any]:
        """The entry for this error in a write command's ``writeErrors``."""
        return {"index": index, "code": self.code, "errmsg": self.message, **self.extra}


def bad_value(message: str) -> CommandError:
    return CommandError(2, message)
