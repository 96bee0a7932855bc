"""Log lines as a person and as a collector read them: human-readable on a terminal, one
JSON object per line otherwise, nothing below the configured level."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from tracker.logging import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    config = structlog.get_config()
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    structlog.configure(**config)
    logging.getLogger().handlers, logging.getLogger().level = handlers, level


def emit(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, log_format: str) -> list[str]:
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(log_format, "INFO")  # type: ignore[arg-type]
    log = structlog.get_logger("tracker.test")
    log.debug("store connected", database="d")
    log.info("worker started", queues=["reports"])
    logging.getLogger("some.library").warning("from the standard library")
    return stream.getvalue().splitlines()


def test_auto_is_readable_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # When
    lines = emit(Terminal(), monkeypatch, "auto")
    # Then: two lines, not JSON, the debug line left out
    assert len(lines) == 2
    assert "worker started" in lines[0]
    assert "from the standard library" in lines[1]
    assert not lines[0].lstrip().startswith("{")
    assert not any("store connected" in line for line in lines)


def test_auto_is_json_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # When
    lines = emit(io.StringIO(), monkeypatch, "auto")
    # Then: one JSON object per line, with level and time
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["worker started", "from the standard library"]
    assert records[0]["level"] == "info"
    assert records[0]["queues"] == ["reports"]
    assert all("timestamp" in r for r in records)


def test_the_format_asked_for_wins_over_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert json.loads(emit(Terminal(), monkeypatch, "json")[0])["event"] == "worker started"
    assert not emit(io.StringIO(), monkeypatch, "console")[0].startswith("{")


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("json", "CHATTY")
