"""The service's event loop: uvloop when installed (the ``speed`` extra), asyncio's own
otherwise or when asked, and a clear error when uvloop is asked for and missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tracker.errors import ConfigurationError
from tracker.service import event_loop
from tracker.settings import Settings


async def running_loop() -> str:
    return event_loop.loop_name(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert event_loop.run(running_loop()) == "uvloop"
    assert event_loop.run(running_loop(), "uvloop") == "uvloop"


def test_asyncio_keeps_asyncio_s_own_loop() -> None:
    assert event_loop.loop_factory("asyncio") is None
    assert event_loop.run(running_loop(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: uvloop cannot be imported
    monkeypatch.setitem(sys.modules, "uvloop", None)
    # When / Then
    assert event_loop.run(running_loop()) == "asyncio"
    coroutine = running_loop()
    with pytest.raises(ConfigurationError, match=r"rabbitmq-task-tracker\[speed\]"):
        event_loop.run(coroutine, "uvloop")
    # the coroutine is closed, not left to warn that it was never awaited
    assert coroutine.cr_frame is None


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be one of"):
        event_loop.loop_factory("trio")  # type: ignore[arg-type]


def test_the_setting_is_read_once_and_checked() -> None:
    assert Settings.from_env({}).event_loop == "auto"
    assert Settings.from_env({"TRACKER_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ConfigurationError, match="TRACKER_EVENT_LOOP"):
        Settings.from_env({"TRACKER_EVENT_LOOP": "fast"})
