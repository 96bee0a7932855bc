"""Every public entry point refuses an id that is not an id — a mapping (an operator such as
``{"$ne": None}``), a list, a number — with ``TypeError``/``ValueError``, before any query
is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockCollection

import tracker
from tracker import TaskStatus, TaskTracker
from tracker.enqueue import Enqueuer
from tracker.operations.dead_letters import Selection
from tracker.rabbit.dlq_import import import_untracked
from tracker.rabbit.pika import tracked_callback
from tracker.service.assembly import ServiceOptions
from tracker.store.executions import (
    archive,
    find_latest_execution,
    find_recent_completion,
)
from tracker.store.leases import release_claim, renew_lease
from tracker.testing import STORE_METHODS

pytestmark = pytest.mark.usefixtures("store")

HOSTILE: list[Any] = [{"$ne": None}, ["a", "b"], 42, None, ""]


@pytest.fixture
def no_query(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fails the test if the store is asked anything."""
    asked: list[str] = []

    def refuse(name: str) -> Any:
        def asked_for(*args: Any, **kwargs: Any) -> Any:
            asked.append(name)
            raise AssertionError(f"a query was built: {name}")

        return asked_for

    for name in STORE_METHODS:
        monkeypatch.setattr(AsyncMongoMockCollection, name, refuse(name))
    yield asked
    assert asked == []


class NoTransport:
    is_open = True
    node = None
    on_failover = None

    async def declare_work_queue(self, queue: str) -> None:
        raise AssertionError("nothing is declared for a refused enqueue")

    async def publish(self, *_: Any, **__: Any) -> None:
        raise AssertionError("nothing is published for a refused enqueue")


async def enqueue(**arguments: Any) -> Any:
    values = {"queue": "q", "payload": {}, **arguments}
    return await Enqueuer(NoTransport()).enqueue(  # type: ignore[arg-type]
        values["queue"], values["payload"], values.get("task_id"), values.get("metadata")
    )


def entry_points(bad: Any) -> dict[str, Callable[[], Awaitable[Any] | Any]]:
    """Each public entry point, called with ``bad`` where an id goes."""
    return {
        "claim": lambda: tracker.claim(bad, worker="w", lease=30),
        "claim.worker": lambda: tracker.claim("e", worker=bad, lease=30),
        "transition": lambda: tracker.transition(bad, TaskStatus.COMPLETED),
        "transition.task_id": lambda: tracker.transition("e", TaskStatus.DLQ, task_id=bad),
        "create_execution.task_id": lambda: tracker.create_execution(bad, "q"),
        "create_execution.queue": lambda: tracker.create_execution("t", bad),
        "create_execution.execution_id": lambda: tracker.create_execution(
            "t", "q", execution_id=bad
        ),
        "wait_until_complete": lambda: tracker.wait_until_complete(bad, timeout=0.1),
        "find_retry_chain": lambda: TaskTracker.find_retry_chain(bad),
        "find_stuck_tasks": lambda: TaskTracker.find_stuck_tasks(bad),
        "get_queue_stats": lambda: TaskTracker.get_queue_stats(bad),
        "find_execution": lambda: TaskTracker.find_execution(bad),
        "find_execution.task_id": lambda: TaskTracker.find_execution("e", bad),
        "find_recent_completion": lambda: find_recent_completion(bad, 60),
        "find_latest_execution": lambda: find_latest_execution(bad),
        "archive": lambda: archive(bad, reason="r", archived_by="ops"),
        "archive.archived_by": lambda: archive("e", reason="r", archived_by=bad),
        "renew_lease": lambda: renew_lease(bad, "token", 30),
        "release_claim": lambda: release_claim("e", bad),
        "enqueue.queue": lambda: enqueue(queue=bad),
        "enqueue.task_id": lambda: enqueue(task_id=bad),
        "tracked": lambda: tracker.tracked(bad),
        "tracked_callback": lambda: tracked_callback(bad, store=None),  # type: ignore[arg-type]
        "Selection.queue": lambda: Selection(queue=bad),
        "Selection.execution_ids": lambda: Selection(execution_ids=[bad]),
        "import_untracked": lambda: import_untracked(None, bad),  # type: ignore[arg-type]
        "ServiceOptions.worker_id": lambda: ServiceOptions(worker_id=bad),
    }


# Where None means "not given".
OPTIONAL = {
    "transition.task_id",
    "create_execution.execution_id",
    "find_execution.task_id",
    "enqueue.task_id",
    "Selection.queue",
    "ServiceOptions.worker_id",
}


@pytest.mark.parametrize("bad", HOSTILE, ids=["mapping", "list", "int", "none", "empty"])
async def test_every_entry_point_refuses_what_is_not_an_id(bad: Any, no_query: list[str]) -> None:
    refused = []
    skipped = OPTIONAL if bad is None else set()
    for name, call in entry_points(bad).items():
        if name in skipped:
            continue
        try:
            result = call()
            if isinstance(result, Awaitable):
                await result
        except (TypeError, ValueError):
            refused.append(name)
        except AssertionError:
            raise
    assert sorted(set(entry_points(bad)) - set(refused) - skipped) == []


@pytest.mark.parametrize(
    "metadata", [{"$where": "1"}, {"a.b": 1}, {"x": {"$gt": 1}}, {1: "x"}, ["a"], "text"]
)
async def test_metadata_that_could_read_as_operators_or_paths_is_refused(
    metadata: Any, no_query: list[str]
) -> None:
    with pytest.raises((TypeError, ValueError)):
        await enqueue(task_id="t", metadata=metadata)
    with pytest.raises((TypeError, ValueError)):
        await tracker.create_execution("t", "q", metadata=metadata)
