"""structlog configuration: JSON lines for machines, console for people (``auto``: console on
a terminal, JSON otherwise). Task fields are bound through ``structlog.contextvars``, so
every line inside a handler carries them. The standard library's log records (the broker
and HTTP clients') go through the same renderer, so a process writes one format."""

from __future__ import annotations

import logging
import sys

import structlog

from tracker.settings import LogFormat

# aio-pika's robust connection says "Connection attempt ... failed, reconnecting" at WARNING
# for every attempt; the tracker's failover logs each node lost or unreachable itself.
_QUIETER = {"aio_pika.robust_connection": logging.ERROR, "aiormq.connection": logging.CRITICAL}


def configure_logging(log_format: LogFormat = "auto", level: str = "INFO") -> None:
    """Route structlog (and the standard library's ``logging``) to stderr in ``log_format``."""
    level_number = logging.getLevelName(level.upper())
    if not isinstance(level_number, int):
        raise ValueError(f"unknown log level {level!r}")
    terminal = sys.stderr.isatty()
    chosen = ("console" if terminal else "json") if log_format == "auto" else log_format
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = _Stderr()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    # Replace this module's handler of an earlier call; leave anyone else's in place.
    root.handlers = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(max(level_number, logging.WARNING))
    for name, quieter in _QUIETER.items():
        logging.getLogger(name).setLevel(max(quieter, level_number))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def default_level() -> None:
    """structlog prints every level, debug included, until an application configures it:
    unless one has, the tracker's lines start at INFO."""
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
