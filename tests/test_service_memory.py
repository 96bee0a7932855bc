"""The cyclic collector in a service (``tracker.service.memory``): start-up objects are
frozen once per process, and a service can be told not to."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import tracker
from tests.rabbit import Broker
from tracker import TaskContext
from tracker.service import assembly

FREEZE_TWICE = """
import gc
from tracker.service.memory import freeze_startup_objects
before = gc.get_freeze_count()
first = freeze_startup_objects()
frozen = gc.get_freeze_count()
second = freeze_startup_objects()
print(before, first, frozen > 0, second, gc.get_freeze_count() == frozen)
"""


def test_start_up_objects_are_frozen_once_per_process() -> None:
    # When: a fresh process freezes twice
    out = subprocess.run(
        [sys.executable, "-c", FREEZE_TWICE], capture_output=True, text=True, check=True
    ).stdout.split()
    # Then: the first call froze what existed, the second did nothing
    assert out == ["0", "True", "True", "False", "True"]


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
@pytest.mark.parametrize("freeze", [True, False])
async def test_a_worker_freezes_on_start_unless_told_not_to(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, freeze: bool
) -> None:
    # Given
    calls: list[bool] = []
    monkeypatch.setattr(assembly, "freeze_startup_objects", lambda: calls.append(True))
    queue = await broker.new_queue()

    @tracker.tracked(queue)
    async def handle(task: TaskContext) -> Any:
        return None

    # When
    async with tracker.Worker([handle], broker.url, freeze_startup_objects=freeze):
        pass
    # Then
    assert calls == ([True] if freeze else [])
