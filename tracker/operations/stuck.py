"""Executions stuck in processing: past their own deadline (``timeoutAt``, set when an attempt
is claimed: its start plus its consumer's timeout), listed and failed as timed out.

One definition serves the command, the API and the ``tracker_stuck_executions`` gauge the
alert reads, so what the alert counts is what ``tracker stuck`` lists. An execution written
without a deadline (by an older version, or another writer of the collection) counts as
stuck after ``UNDATED_TIMEOUT_SECONDS``, the Mongoose schema's ``isStuck`` default.
``TaskTracker.find_stuck_tasks`` and ``is_stuck`` keep their own meaning (processing for
longer than a given time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from beanie import SortDirection

from tracker.consumer import QueueRules
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.operations import audit, pages
from tracker.operations.actors import Actor
from tracker.store import connection
from tracker.validation import check_count, check_id, check_optional_id

UNDATED_TIMEOUT_SECONDS: Final = 30 * 60.0
MAX_FAIL: Final = 1000
MAX_LIMIT: Final = 10_000
# Who recorded the failure, in the history and the claim fields.
OPERATOR_WORKER: Final = "tracker-operator"
Publish = Callable[[OutgoingMessage], Awaitable[None]]


def stuck_filter(
    now: datetime, queue: str | None = None, older_than: float | None = None
) -> dict[str, Any]:
    """Processing executions (of ``queue``) past their deadline at ``now``, started more
    than ``older_than`` seconds before it (None: any time)."""
    query: dict[str, Any] = {} if queue is None else {"queueName": check_id(queue, "queue")}
    query["status"] = TaskStatus.PROCESSING.value
    query["$or"] = [
        {"timeoutAt": {"$lt": now}},
        {
            "timeoutAt": None,
            "processingStartedAt": {"$lt": now - timedelta(seconds=UNDATED_TIMEOUT_SECONDS)},
        },
    ]
    if older_than is not None:
        query["processingStartedAt"] = {"$lt": now - timedelta(seconds=float(older_than))}
    return query


def timeout_of(execution: TaskTracker) -> float:
    """The timeout an execution ran under: its own, else the one it is judged by."""
    if execution.timeout_seconds is not None and execution.timeout_seconds > 0:
        return float(execution.timeout_seconds)
    return UNDATED_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Stuck:
    """``executions``: the stuck ones, longest processing first, at most the limit asked;
    ``total``: how many there are in all."""

    executions: list[TaskTracker]
    total: int


async def find_stuck(
    queue: str | None = None, older_than: float | None = None, *, limit: int = 100
) -> Stuck:
    """The executions stuck now, on the server's clock."""
    check_optional_id(queue, "queue")
    if check_count(limit, "limit", MAX_LIMIT) < 1:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}")
    if older_than is not None and not 0 <= float(older_than) <= 100 * 365 * 86400:
        raise ValueError("older_than must be from 0 to 100 years, in seconds")
    query = stuck_filter(connection.server_clock().estimate(), queue, older_than)
    oldest_first = [("processingStartedAt", SortDirection.ASCENDING)]
    found = await TaskTracker.find(query).sort(oldest_first).limit(limit).to_list()
    total = await pages.count(connection.collection(), query)
    return Stuck(found, total)


@dataclass(frozen=True)
class Failed:
    """What failing one execution did: ``outcome`` ``retried``, ``dead_lettered``, or
    ``skipped`` (it was no longer stuck: finished, or failed by another path first)."""

    execution_id: str
    task_id: str | None
    outcome: str
    timeout_seconds: float | None
    next_execution_id: str | None = None


async def fail_stuck(
    execution_ids: Sequence[str], *, actor: Actor, publish: Publish
) -> list[Failed]:
    """Fail each of ``execution_ids`` still processing as timed out after its own timeout,
    then publish its retry (the usual policy, under its stored maxRetries). Audited as
    ``stuck.fail``."""
    actor.require_operator()
    ids = list(dict.fromkeys(check_id(e, "execution id") for e in execution_ids))
    if len(ids) > MAX_FAIL:
        raise ValueError(f"fail at most {MAX_FAIL} executions at once")
    results: list[Failed] = []
    selection = {"execution_ids": ids[:100]}
    async with audit.audited(actor, "stuck.fail", "executions", selection=selection) as outcome:
        for execution_id in ids:
            results.append(await _fail_one(execution_id, publish))
        outcome.result["failed"] = sum(r.outcome != "skipped" for r in results)
        outcome.result["execution_ids"] = [r.execution_id for r in results][:100]
    return results


async def _fail_one(execution_id: str, publish: Publish) -> Failed:
    execution = await TaskTracker.find_execution(execution_id)
    if execution is None or execution.status is not TaskStatus.PROCESSING:
        task_id = execution.task_id if execution is not None else None
        return Failed(execution_id, task_id, "skipped", None)
    timeout = timeout_of(execution)
    outcomes = Outcomes(QueueRules(queue=execution.queue_name, timeout=timeout), OPERATOR_WORKER)
    decision = await outcomes.expire(execution_id, execution.claim_token)
    if decision is None or decision.outcome not in ("retried", "dead_lettered"):
        return Failed(execution_id, execution.task_id, "skipped", timeout)
    for message in decision.publish:
        await publish(message)
    after = await TaskTracker.find_execution(execution_id)
    following = after.next_execution_id if after is not None else None
    return Failed(execution_id, execution.task_id, decision.outcome, timeout, following)
