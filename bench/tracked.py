"""The tracked phases, through the tracker's public API only: ``tracker.Publisher.enqueue``
and a ``tracker.Worker`` running a no-op ``@tracker.tracked`` handler."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import tracker
from bench.cpu import Probe, Sample, Window
from bench.measures import Phase
from bench.mongo_commands import CommandCounter, since
from bench.workload import payload, run_limited
from tracker.rabbit.topology import topology_queue_names

if TYPE_CHECKING:
    from tracker.delivery.decision import Decision
    from tracker.delivery.envelope import Envelope

# Latencies recorded per message, seconds.
DELIVERY_TO_ACK = "delivery → ack"  # before_process → before_ack: the whole life in the worker
CLAIM_TO_ACK = "claim → ack"  # after_claim → before_ack: handler run + outcome durable
HANDLER = "handler"  # the no-op handler's own start → end


async def tracked_enqueue(
    amqp_url: str,
    queue: str,
    messages: int,
    concurrency: int,
    probe: Probe,
    commands: CommandCounter,
    on_first: Callable[[], None] | None = None,
    on_last: Callable[[], None] | None = None,
) -> Phase:
    """``messages`` ``Publisher.enqueue`` calls with distinct task ids and 100-byte payloads,
    ``concurrency`` at once; ``on_first`` / ``on_last`` run at the edges of the timed calls
    (a profiler's switch)."""
    payloads = [payload(i) for i in range(messages)]
    deduplicated = 0
    async with tracker.Publisher(amqp_url) as publisher:

        async def enqueue(i: int) -> None:
            nonlocal deduplicated
            result = await publisher.enqueue(queue, payloads[i], task_id=f"{queue}:{i}")
            deduplicated += result.deduplicated

        before = commands.snapshot()
        if on_first is not None:
            on_first()
        start = probe.read()
        await run_limited(messages, concurrency, enqueue)
        end = probe.read()
        if on_last is not None:
            on_last()
        sent = since(before, commands.snapshot())
    return Phase(messages, Window.between(start, end), sent, deduplicated=deduplicated)


class Timing(tracker.Middleware):
    """Times the consume phase from the first delivery to the ``expected``-th settled one
    (``before_ack``: its outcome is durable, it is acked next), with the CPU of this and the
    other processes and the MongoDB commands sent; and each message's latencies.

    ``on_first`` / ``on_last`` run at those two edges (a profiler's switch)."""

    def __init__(
        self,
        expected: int,
        probe: Probe,
        commands: CommandCounter,
        on_first: Callable[[], None] | None = None,
        on_last: Callable[[], None] | None = None,
    ) -> None:
        self.expected = expected
        self.probe = probe
        self.commands = commands
        self.on_first = on_first
        self.on_last = on_last
        self.done = asyncio.Event()
        self.edges: list[Sample] = []
        self.commands_before: Counter[str] = Counter()
        self.commands_after: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.delivered: dict[str | None, float] = {}
        self.claimed: dict[str, float] = {}
        self.handler_started: dict[str, float] = {}
        self.latencies: dict[str, list[float]] = {
            DELIVERY_TO_ACK: [],
            CLAIM_TO_ACK: [],
            HANDLER: [],
        }
        self.settled = 0
        self.redelivered = 0

    def start(self) -> None:
        """Call just before the worker starts: the commands sent from here on are counted."""
        self.commands_before = self.commands.snapshot()

    def window(self) -> Window:
        return Window.between(self.edges[0], self.edges[1])

    def sent(self) -> Counter[str]:
        return since(self.commands_before, self.commands_after)

    async def before_process(self, envelope: Envelope) -> None:
        now = time.perf_counter()
        if not self.edges:
            if self.on_first is not None:
                self.on_first()
            self.edges.append(self.probe.read())
        self.delivered[envelope.message_id] = now
        self.redelivered += envelope.redelivered

    async def after_claim(self, task: tracker.TaskContext) -> None:
        self.claimed[task.execution_id] = time.perf_counter()

    def handler_ran(self, started: float, ended: float) -> None:
        self.latencies[HANDLER].append(ended - started)

    async def before_ack(self, envelope: Envelope, decision: Decision) -> None:
        now = time.perf_counter()
        execution_id = decision.execution_id or envelope.message_id or ""
        claimed = self.claimed.pop(execution_id, None)
        if claimed is not None:
            self.latencies[CLAIM_TO_ACK].append(now - claimed)
        delivered = self.delivered.pop(envelope.message_id, None)
        if delivered is not None:
            self.latencies[DELIVERY_TO_ACK].append(now - delivered)
        self.outcomes[decision.outcome] += 1
        self.settled += 1
        if self.settled == self.expected:
            self.edges.append(self.probe.read())
            self.commands_after = self.commands.snapshot()
            if self.on_last is not None:
                self.on_last()
            self.done.set()


def noop_consumer(queue: str, timing: Timing) -> tracker.TrackedConsumer:
    """A no-op handler on ``queue`` (default rules) that reports its own start and end."""

    @tracker.tracked(queue)
    async def noop(task: tracker.TaskContext) -> None:
        started = time.perf_counter()
        timing.handler_ran(started, time.perf_counter())

    return noop


def tracked_queues(queue: str) -> list[str]:
    """Every queue a Worker declares for a consumer of ``queue`` with the default rules."""

    async def nothing(task: tracker.TaskContext) -> None:
        return None

    consumer = tracker.tracked(queue)(nothing)
    return topology_queue_names(
        consumer.queue, consumer.retry_policy.tiers_ms, round(consumer.timeout * 1000)
    )


async def tracked_consume(
    amqp_url: str,
    queue: str,
    messages: int,
    concurrency: int,
    probe: Probe,
    commands: CommandCounter,
    timeout: float,
    on_first: Callable[[], None] | None = None,
    on_last: Callable[[], None] | None = None,
) -> Phase:
    """Run a ``tracker.Worker`` (``concurrency``, no sweeper, no statistics, no HTTP) on the
    ``messages`` already enqueued to ``queue`` until as many deliveries are settled."""
    timing = Timing(messages, probe, commands, on_first, on_last)
    consumer = noop_consumer(queue, timing)
    worker = tracker.Worker(
        [consumer],
        amqp_url,
        concurrency=concurrency,
        sweep_interval=None,
        stats_interval=None,
        middleware=[timing],
        metrics_port=None,
        metrics_host="127.0.0.1",
    )
    timing.start()
    async with worker:
        async with asyncio.timeout(timeout):
            await timing.done.wait()
    return Phase(
        messages,
        timing.window(),
        timing.sent(),
        latencies=timing.latencies,
        outcomes=timing.outcomes,
        redelivered=timing.redelivered,
    )
