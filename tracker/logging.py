"""structlog configuration: JSON lines for machines, console for people. Task fields are bound
through ``structlog.contextvars``, so every line inside a handler carries them."""

from __future__ import annotations

import logging
import sys

import structlog

from tracker.settings import LogFormat


def configure_logging(log_format: LogFormat = "console", level: str = "INFO") -> None:
    """Route structlog (and the standard library's ``logging``) to stderr in ``log_format``."""
    level_number = logging.getLevelName(level.upper())
    if not isinstance(level_number, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level_number, logging.WARNING), stream=sys.stderr)
