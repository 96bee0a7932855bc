"""What the MongoDB stand-in costs per tracked message: its own CPU, phase by phase.

The stand-in (``tests.mongo_standin``) runs in its own process; the tracker talks to it with
the real PyMongo async client and makes the store calls a consumer makes, in batches as
group commit sends them: create the executions (enqueue), claim them (``claim_many``: an
update of one statement per execution, then a read-back), complete them
(``transitions.apply``). For each phase the stand-in process's user + system CPU (from
/proc, 10 ms resolution) is divided by the number of messages. No RabbitMQ is needed.

Run: ``.venv/bin/python -m bench.standin_cost [--messages 5000] [--batch 50] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import tracker
from bench.cpu import process_cpu_seconds
from bench.workload import payload
from tests.mongo_standin import StandIn
from tracker.constants import DEFAULT_CONSUMER_MAX_RETRIES, DEFAULT_TIMEOUT_SECONDS
from tracker.delivery.outcomes import expiry
from tracker.lifecycle import TaskStatus
from tracker.store import transitions
from tracker.store.claims import ClaimRequest, claim_many
from tracker.store.connection import ensure_indexes
from tracker.store.creation import NewExecution, create_executions

QUEUE = "standin-cost"
WORKER = "standin-cost-worker"
RETENTION = 7 * 86400.0
T = TypeVar("T")


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def _enqueue(count: int, batch: int) -> list[tuple[str, str]]:
    """Create ``count`` queued executions; their (task id, execution id)."""
    news = [
        NewExecution(f"{QUEUE}:{uuid.uuid4()}", QUEUE, payload(i)).checked() for i in range(count)
    ]
    created: list[tuple[str, str]] = []
    for part in _batches(news, batch):
        for result in await create_executions(part):
            if isinstance(result, Exception):
                raise result
            created.append((result.document["taskId"], result.document["executionId"]))
    return created


async def _claim(executions: list[tuple[str, str]], batch: int) -> list[tuple[str, str, str]]:
    """Claim every execution as a consumer does; (task id, execution id, claim token)."""
    requests = [
        ClaimRequest(
            execution_id,
            worker=WORKER,
            lease=30.0,
            timeout=DEFAULT_TIMEOUT_SECONDS,
            default_max_retries=DEFAULT_CONSUMER_MAX_RETRIES,
            task_id=task_id,
            queue=QUEUE,
        )
        for task_id, execution_id in executions
    ]
    claimed: list[tuple[str, str, str]] = []
    for part in _batches(requests, batch):
        for request, claim in zip(part, await claim_many(part), strict=True):
            if isinstance(claim, Exception) or claim.token is None:
                raise RuntimeError(f"a claim was not won: {claim!r}")
            claimed.append((str(request.task_id), request.execution_id, claim.token))
    return claimed


async def _complete(claimed: list[tuple[str, str, str]], batch: int) -> None:
    """Complete every claimed execution as ``Outcomes.complete`` does."""
    changes = [
        transitions.Transition(
            execution_id,
            TaskStatus.COMPLETED,
            claim_token=token,
            message="completed",
            worker=WORKER,
            fields={"result": None, **expiry(RETENTION)},
            task_id=task_id,
        )
        for task_id, execution_id, token in claimed
    ]
    for part in _batches(changes, batch):
        for result in await transitions.apply(part):
            if result != (TaskStatus.COMPLETED, True):
                raise RuntimeError(f"a completion was not applied: {result!r}")


async def _measured(pid: int, step: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """Run ``step``: its value and the CPU seconds the stand-in spent meanwhile."""
    before = process_cpu_seconds(pid) or 0.0
    value = await step()
    return value, (process_cpu_seconds(pid) or 0.0) - before


async def _round(messages: int, batch: int) -> dict[str, float]:
    """One round on a fresh stand-in: its CPU seconds in each phase."""
    with StandIn() as standin:
        pid = standin.pid or 0
        await tracker.connect(standin.url, f"standin_cost_{uuid.uuid4().hex[:8]}")
        try:
            await ensure_indexes()
            executions, enqueue = await _measured(pid, lambda: _enqueue(messages, batch))
            claimed, claim = await _measured(pid, lambda: _claim(executions, batch))
            _, completion = await _measured(pid, lambda: _complete(claimed, batch))
        finally:
            await tracker.disconnect()
    return {"enqueue": enqueue, "claim": claim, "completion": completion}


async def run(messages: int, batch: int, rounds: int) -> None:
    results = [await _round(messages, batch) for _ in range(rounds)]
    print(f"{messages:,} messages in batches of {batch}, {rounds} rounds")
    print("stand-in CPU per message, µs: the least of the rounds (others' work only adds)")
    print(f"{'phase':<12}{'µs/msg':>8}   rounds")
    for phase in results[0]:
        each = [result[phase] / messages * 1e6 for result in results]
        print(f"{phase:<12}{min(each):>8.0f}   {' '.join(f'{value:.0f}' for value in each)}")
    totals = [sum(result.values()) / messages * 1e6 for result in results]
    print(f"{'total':<12}{min(totals):>8.0f}   {' '.join(f'{value:.0f}' for value in totals)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    asyncio.run(run(args.messages, args.batch, args.rounds))


if __name__ == "__main__":
    main()
