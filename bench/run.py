"""`make bench` (`python -m bench.run [--quick]`): the tracker against bare aio-pika on the same
RabbitMQ, interleaved round by round, with the real PyMongo async client against the MongoDB
stand-in in its own process.

Each round: bare confirmed publish, bare consume of those messages, tracked enqueue
(``tracker.Publisher``), tracked consume of those (``tracker.Worker``, no-op handler). Then
the optional peers (Dramatiq, Celery) and the /metrics scrape cost. The Markdown report is
printed and written to bench/results/latest.md; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import tracker
from bench import machine as machine_facts
from bench.bare import bare_consume, bare_publish
from bench.cpu import Probe, find_listener
from bench.disturbance import Disturbances
from bench.measures import Round
from bench.mongo_commands import CommandCounter
from bench.options import Options, parse
from bench.peers import PeerResult, run_peers
from bench.report import BROKER, STANDIN, render
from bench.scrape import scrape_cost
from bench.scratch import Scratch
from bench.tracked import tracked_consume, tracked_enqueue, tracked_queues
from tests.mongo_standin import StandIn
from tracker.logging import configure_logging
from tracker.rabbit.topology import work_queue_specs
from tracker.service import event_loop
from tracker.settings import Settings
from tracker.store.connection import ensure_indexes


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Disturbed(Exception):
    """A round that something outside the benchmark disturbed: not a measurement."""


class Bench:
    """One run's shared state: the options, the probe, the command counter, the queues, and
    the attempts discarded because the shared broker was disturbed."""

    def __init__(self, options: Options, probe: Probe, commands: CommandCounter) -> None:
        self.options = options
        self.probe = probe
        self.commands = commands
        self.scratch = Scratch(options.amqp_url)
        self.disturbances = Disturbances().install()
        self.discarded: list[str] = []
        self.waits: list[str] = []
        self.loaded: list[str] = []  # rounds kept although other processes loaded the cores

    async def quiet(self, label: str) -> None:
        """Wait until processes outside the benchmark leave the machine (mostly) alone."""
        started = time.perf_counter()
        window = await self.probe.wait_for_quiet(longest=self.options.quiet_wait)
        waited = time.perf_counter() - started
        load = window.foreign_load
        if load is not None and (waited > 2.5 or load >= 0.25):
            note = f"{label}: waited {waited:.0f} s for other processes to quiet down"
            note += f" (then {load:.2f} cores busy outside the benchmark)"
            self.waits.append(note)
            _say(f"  {note}")

    async def measured_round(
        self,
        number: int,
        messages: int,
        on_first: Callable[[], None] | None = None,
        on_last: Callable[[], None] | None = None,
        check_load: bool = True,
        profiled: str = "consume",
    ) -> Round:
        """``round``, run again (at most ``options.attempts`` in all) while something else disturbs
        it: a connection closed by the broker, a redelivery, an outcome other than
        completed, other processes keeping more than ``LOAD_LIMIT`` cores busy (kept
        on the last attempt, and reported). Any other error is raised at once;
        ``Disturbed`` when every attempt was."""
        attempts = self.options.attempts
        for attempt in range(1, attempts + 1):
            await self.quiet(f"round {number}, attempt {attempt}")
            mark = len(self.disturbances.seen)
            error: BaseException | None = None
            try:
                done = await self.round(number, messages, on_first, on_last, profiled)
            except Exception as exc:
                if not self.disturbances.since(mark):
                    raise
                error = exc
            why = self.disturbances.since(mark)
            if error is None:
                why += _anomalies(done)
                busy = _busy(done) if check_load else []
                if busy and attempt < attempts:
                    why += busy  # the last attempt is kept, and the load reported
                elif busy:
                    self.loaded.append(f"round {number}: " + "; ".join(busy))
                if not why:
                    return done
            reason = f"round {number}, attempt {attempt}: {'; '.join(why[:3])}"
            self.discarded.append(reason)
            _say(f"  discarded ({reason})")
            await self.scratch.delete_all()
            await asyncio.sleep(10 * attempt)  # whatever disturbed it may be over by then
        raise Disturbed(f"round {number} was disturbed {attempts} times")

    async def round(
        self,
        number: int,
        messages: int,
        on_first: Callable[[], None] | None = None,
        on_last: Callable[[], None] | None = None,
        profiled: str = "consume",
    ) -> Round:
        """One round; ``on_first`` and ``on_last`` mark the edges of the tracked phase named
        by ``profiled`` ("consume" or "enqueue")."""
        o, probe = self.options, self.probe
        url, c, timeout = o.amqp_url, o.concurrency, o.timeout
        queue = self.scratch.name(f"bare-r{number}")
        self.scratch.own([spec.name for spec in work_queue_specs(queue)])
        published = await bare_publish(url, queue, messages, c, probe)
        consumed = await bare_consume(url, queue, messages, c, probe, timeout)
        await self.scratch.delete([spec.name for spec in work_queue_specs(queue)])

        queue = self.scratch.name(f"tracked-r{number}")
        self.scratch.own(tracked_queues(queue))
        edges, unmarked = (on_first, on_last), (None, None)
        enqueue_edges = edges if profiled == "enqueue" else unmarked
        consume_edges = edges if profiled == "consume" else unmarked
        enqueued = await tracked_enqueue(
            url, queue, messages, c, probe, self.commands, *enqueue_edges
        )
        worked = await tracked_consume(
            url, queue, messages, c, probe, self.commands, timeout, *consume_edges
        )
        await self.scratch.delete(tracked_queues(queue))
        return Round(number, published, enqueued, consumed, worked)


LOAD_LIMIT = 0.5  # cores busy outside the benchmark during a phase: a quarter of 2 cores


def _busy(done: Round) -> list[str]:
    """The phases during which other processes kept more than ``LOAD_LIMIT`` cores busy."""
    found = []
    for name, phase in (
        ("bare publish", done.bare_publish),
        ("tracked enqueue", done.tracked_enqueue),
        ("bare consume", done.bare_consume),
        ("tracked consume", done.tracked_consume),
    ):
        load = phase.window.foreign_load
        if load is not None and load > LOAD_LIMIT:
            found.append(f"{load:.2f} cores busy outside the benchmark during {name}")
    return found


def _anomalies(done: Round) -> list[str]:
    """What says a round was disturbed although nothing failed."""
    found = []
    for name, phase in (("bare consume", done.bare_consume), ("tracked", done.tracked_consume)):
        if phase.redelivered:
            found.append(f"{phase.redelivered} redelivered deliveries in {name}")
    others = {k: n for k, n in done.tracked_consume.outcomes.items() if k != "completed"}
    if others:
        found.append(f"tracked outcomes other than completed: {others}")
    if done.tracked_enqueue.deduplicated:
        found.append(f"{done.tracked_enqueue.deduplicated} enqueues deduplicated")
    return found


async def _setup(standin: StandIn, options: Options) -> Probe:
    await tracker.connect(standin.url, f"bench_{uuid.uuid4().hex[:8]}")
    await ensure_indexes()
    broker = urlsplit(options.amqp_url.split(",")[0])
    local = broker.hostname in ("127.0.0.1", "localhost", "::1")
    broker_pid = find_listener(broker.port or 5672) if local else None
    return Probe({STANDIN: standin.pid, BROKER: broker_pid})


async def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    configure_logging("json", "WARNING")
    # A Worker serves HTTP when these are set: not in the measurement.
    for name in ("TRACKER_HTTP_PORT", "TRACKER_METRICS_PORT"):
        os.environ.pop(name, None)
    # Registered before the client exists: every command of every client is counted.
    commands = CommandCounter().register()
    machine = await machine_facts.describe(options.amqp_url)
    rounds: list[Round] = []
    peers: list[PeerResult] | None = None
    async with StandIn() as standin:
        probe = await _setup(standin, options)
        bench = Bench(options, probe, commands)
        try:
            _say(f"warm-up round: {options.warmup:,} messages (not reported)")
            await bench.measured_round(0, options.warmup, check_load=False)
            for number in range(1, options.rounds + 1):
                _say(f"round {number}/{options.rounds}: {options.messages:,} messages")
                try:
                    done = await bench.measured_round(number, options.messages)
                except Disturbed as exc:
                    bench.discarded.append(f"round {number} not measured: {exc}")
                    _say(f"  {exc}: not measured")
                    continue
                _say(
                    f"  consume {done.bare_consume.rate:,.0f} vs {done.tracked_consume.rate:,.0f}"
                    f" msg/s, publish {done.bare_publish.rate:,.0f} vs "
                    f"{done.tracked_enqueue.rate:,.0f} msg/s"
                )
                rounds.append(done)
            if options.peers:
                _say("peers")
                peers = await run_peers(options, bench.scratch)
            _say("scrape cost")
            scrape = await scrape_cost(standin.url, options.history)
        finally:
            await tracker.disconnect()
            await bench.scratch.delete_all()
    if not rounds:
        _say("no round could be measured: something kept disturbing the broker")
        return 1
    notes = (bench.discarded, bench.waits, bench.loaded)
    text = render(machine, options, rounds, peers, scrape, *notes)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    # The loop `tracker serve` would run on (uvloop when installed; TRACKER_EVENT_LOOP).
    sys.exit(event_loop.run(main(), Settings.from_env().event_loop))
