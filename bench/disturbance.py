"""Noticing that something outside the benchmark disturbed a round on the shared broker: a
connection closed by the broker (another suite's ``rabbitmqctl close_all_connections``, a
restart) or a delivery that came back redelivered. Such a round is not a measurement."""

from __future__ import annotations

import logging
from typing import Final

# What aiormq and aio-pika log when the broker closes or drops a connection.
_SIGNS: Final = ("connection close", "connection_forced", "connection lost", "reconnect")
_LOGGERS: Final = ("aiormq", "aio_pika")


class Disturbances(logging.Handler):
    """Collects the log lines of the AMQP clients that say a connection was closed or lost."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def install(self) -> Disturbances:
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if any(sign in text.lower() for sign in _SIGNS):
            self.seen.append(text.splitlines()[0][:200])

    def since(self, mark: int) -> list[str]:
        return self.seen[mark:]
