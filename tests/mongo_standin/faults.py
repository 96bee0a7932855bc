"""The ``failCommand`` fail point, configured with the command a real server takes
(``configureFailPoint`` with ``enableTestCommands``), so a fault test runs against either."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from tests.mongo_standin.commands import RETRYABLE_WRITE_COMMANDS
from tests.mongo_standin.errors import RETRYABLE_WRITE_CODES, CommandError, bad_value, code_name


class FailCommand:
    """Which commands fail, how, and how many more times."""

    def __init__(self) -> None:
        self.mode = "off"
        self.remaining = 0
        self.probability = 1.0
        self.data: Mapping[str, Any] = {}
        self.entered = 0

    def configure(self, mode: Any, data: Any) -> int:
        """Apply a ``configureFailPoint`` mode; returns how often the previous one fired."""
        previous = self.entered
        if data is not None and not isinstance(data, Mapping):
            raise bad_value("'data' must be an object")
        self.data, self.entered, self.probability = data or {}, 0, 1.0
        if mode == "off":
            self.mode = "off"
        elif mode == "alwaysOn":
            self.mode = "alwaysOn"
        elif isinstance(mode, Mapping) and "times" in mode:
            self.mode, self.remaining = "times", int(mode["times"])
            if self.remaining <= 0:
                self.mode = "off"
        elif isinstance(mode, Mapping) and "skip" in mode:
            self.mode, self.remaining = "skip", int(mode["skip"])
        elif isinstance(mode, Mapping) and "activationProbability" in mode:
            self.mode, self.probability = "alwaysOn", float(mode["activationProbability"])
        else:
            raise bad_value(f"unknown fail point mode: {mode!r}")
        return previous

    def status(self) -> dict[str, Any]:
        """The fail point's state, for ``standinStats``."""
        return {
            "mode": self.mode,
            "remaining": self.remaining,
            "entered": self.entered,
            "data": dict(self.data),
        }

    def consume(self, name: str, app_name: str | None) -> Mapping[str, Any] | None:
        """The fail point's data if it fires for this command, counting it as fired."""
        if self.mode == "off" or name not in self.data.get("failCommands", ()):
            return None
        if "appName" in self.data and self.data["appName"] != app_name:
            return None
        if self.mode == "skip":
            if self.remaining > 0:
                self.remaining -= 1
                return None
        elif self.mode == "times":
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = "off"
        elif self.probability < 1.0 and random.random() >= self.probability:
            return None
        self.entered += 1
        return self.data


def failure_reply(data: Mapping[str, Any], command: Mapping[str, Any]) -> dict[str, Any]:
    """The reply to a command the fail point makes fail with ``errorCode``."""
    code = int(data["errorCode"])
    reply = CommandError(code, "Failing command via 'failCommand' failpoint").reply()
    labels = error_labels(data, command, code)
    if labels:
        reply["errorLabels"] = labels
    return reply


def error_labels(data: Mapping[str, Any], command: Mapping[str, Any], code: int) -> list[str]:
    """The labels a real server attaches: those given, else RetryableWriteError when a
    retryable write (one with a txnNumber) fails with a retryable code."""
    if "errorLabels" in data:
        return list(data["errorLabels"])
    name = next(iter(command), "")
    retryable = name in RETRYABLE_WRITE_COMMANDS and "txnNumber" in command
    return ["RetryableWriteError"] if retryable and code in RETRYABLE_WRITE_CODES else []


def write_concern_error(data: Mapping[str, Any]) -> dict[str, Any]:
    error = dict(data["writeConcernError"])
    if "code" in error:
        error.setdefault("codeName", code_name(int(error["code"])))
    error.setdefault("errmsg", "waiting for replication timed out")
    return error
