"""The Markdown report of a run: the machine, a table per round, the spread over rounds, the
targets, the details, the peers, the scrape cost and what the stand-in does not model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bench.machine import Machine
from bench.measures import Phase, Round, spread
from bench.mongo_commands import CRUD
from bench.options import Options
from bench.peers import PeerResult
from bench.scrape import ScrapeRow
from bench.tracked import CLAIM_TO_ACK, DELIVERY_TO_ACK, HANDLER

STANDIN = "MongoDB stand-in"
BROKER = "RabbitMQ"

NOT_MODELLED = """\
The MongoDB stand-in (`tests/mongo_standin`) speaks the wire protocol, so the real PyMongo
client does all its own work (BSON encoding and decoding, sessions, retryable writes, the
connection pool, server selection), but the server side is not a MongoDB:

- **No server-side cost.** Documents live in Python dicts behind hash indexes; an indexed
  lookup, an update or an insert costs the same whatever the collection holds. No query
  planner, no WiredTiger, no cache pressure, no lock or write conflicts between concurrent
  updates.
- **No durability.** No journal, no fsync, no checkpoint: `w: majority` (the tracker's
  default write concern) is accepted and answered at once. On a real replica set each
  acknowledged write waits for a majority of members to journal it.
- **No replication.** A single-member "replica set" primary; no secondaries, no oplog, no
  elections, no replication lag.
- **No network latency.** Loopback, on the same machine; it answers each command as soon as
  its Python event loop gets to it. Round trips per message therefore cost CPU here, never
  waiting: on a real deployment each one also adds a network round trip (typically 0.2-1 ms
  in one zone) and the server's own time to the latency of every message, and more
  round trips per message need more messages in flight to keep the same throughput.
- It shares this machine's cores with the broker and the benchmark (its own CPU per
  message is in the details), which a dedicated MongoDB server would not.

So the throughput and latency here are the client side's ceiling: they bound what the tracker
can do, and what changes between runs is the tracker's own cost (CPU per message, round
trips per message), which is what the figures are for."""


@dataclass(frozen=True)
class Target:
    name: str
    limit: float
    higher_is_better: bool
    value: Callable[[Round], float]
    unit: str
    digits: int

    def verdict(self, rounds: list[Round]) -> tuple[float, float, bool]:
        """(median, worst round, whether the median meets the target)."""
        values = [self.value(r) for r in rounds]
        low, median, high = spread(values)
        worst = low if self.higher_is_better else high
        ok = median >= self.limit if self.higher_is_better else median <= self.limit
        return median, worst, ok


TARGETS = (
    Target(
        "consumer CPU per message (tracked consume) ≤ 0.25 ms",
        0.25,
        False,
        lambda r: r.tracked_consume.cpu_us / 1000,
        " ms",
        3,
    ),
    Target(
        "MongoDB round trips per consumed message ≤ 0.5",
        0.5,
        False,
        lambda r: r.tracked_consume.round_trips,
        "",
        2,
    ),
    Target("consume ratio (tracked / bare) ≥ 0.5", 0.5, True, lambda r: r.consume_ratio, "", 2),
    Target("enqueue ratio (tracked / bare) ≥ 0.5", 0.5, True, lambda r: r.enqueue_ratio, "", 2),
)


# The CPU target (0.25 ms) was set on a machine where Dramatiq's worker took 0.129 ms per
# message. Machines differ twofold; the CPU of a peer in the same run does not move with them.
TARGET_MACHINE_DRAMATIQ_CPU_US = 129.0


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


# The per-round and spread columns: name, value of a round, digits.
COLUMNS: tuple[tuple[str, Callable[[Round], float | None], int], ...] = (
    ("bare publish msg/s", lambda r: r.bare_publish.rate, 0),
    ("tracked enqueue msg/s", lambda r: r.tracked_enqueue.rate, 0),
    ("enqueue ratio", lambda r: r.enqueue_ratio, 2),
    ("bare consume msg/s", lambda r: r.bare_consume.rate, 0),
    ("tracked consume msg/s", lambda r: r.tracked_consume.rate, 0),
    ("consume ratio", lambda r: r.consume_ratio, 2),
    ("consumer CPU µs/msg, bare", lambda r: r.bare_consume.cpu_us, 1),
    ("consumer CPU µs/msg, tracked", lambda r: r.tracked_consume.cpu_us, 1),
    ("round trips/msg", lambda r: r.tracked_consume.round_trips, 2),
    ("p50 ms (claim → ack)", lambda r: r.tracked_consume.percentile_ms(CLAIM_TO_ACK, 50), 2),
    ("p99 ms (claim → ack)", lambda r: r.tracked_consume.percentile_ms(CLAIM_TO_ACK, 99), 2),
)


def _machine(machine: Machine, options: Options) -> list[str]:
    versions = ", ".join(f"{name} {v}" for name, v in machine.versions.items())
    return [
        f"- Date: {machine.date}; command: `{options.command}` (from the repository root; "
        "`make bench` runs `python -m bench.run`)",
        f"- Run: {options.messages:,} messages per phase, {options.rounds} round(s) of "
        f"(bare, tracked), concurrency {options.concurrency} (publishes awaiting their "
        "confirm, and the consumers' prefetch); an untimed warm-up round of "
        f"{options.warmup:,} first",
        f"- Machine: {machine.cpu}, {machine.cores} cores, {machine.memory_gib:.0f} GiB, "
        f"{machine.system}; {machine.python}",
        f"- RabbitMQ {machine.rabbitmq} on loopback (shared by the benchmark, the stand-in "
        "and the peers)",
        f"- {versions}; tracker at {machine.commit}, sources {machine.tracker_digest}",
        "- Store: the real PyMongo async client (`tracker.connect(url, db)`) against the "
        "MongoDB stand-in in its own process on loopback, indexes created with "
        "`ensure_indexes()`",
    ]


def _targets(rounds: list[Round]) -> list[str]:
    rows = []
    for target in TARGETS:
        median, worst, ok = target.verdict(rounds)
        rows.append(
            [
                target.name,
                f"{median:.{target.digits}f}{target.unit}",
                f"{worst:.{target.digits}f}{target.unit}",
                "**PASS**" if ok else "**FAIL**",
            ]
        )
    return _table(["target", "median", "worst round", "verdict"], rows)


def _per_round(rounds: list[Round]) -> list[str]:
    rows = [
        [str(r.number), *(_n(value(r), digits) for _, value, digits in COLUMNS)] for r in rounds
    ]
    return _table(["round", *(name for name, _, _ in COLUMNS)], rows)


def _spread(rounds: list[Round]) -> list[str]:
    rows = []
    for name, value, digits in COLUMNS:
        values = [v for v in (value(r) for r in rounds) if v is not None]
        if not values:
            rows.append([name, "n/a", "n/a", "n/a"])
            continue
        rows.append([name, *(_n(v, digits) for v in spread(values))])
    return _table(["metric", "min", "median", "max"], rows)


def _phases(r: Round) -> list[tuple[str, Phase]]:
    return [
        ("bare publish", r.bare_publish),
        ("tracked enqueue", r.tracked_enqueue),
        ("bare consume", r.bare_consume),
        ("tracked consume", r.tracked_consume),
    ]


def _commands(rounds: list[Round]) -> list[str]:
    names: Counter[str] = Counter()
    for r in rounds:
        names.update(r.tracked_enqueue.commands)
        names.update(r.tracked_consume.commands)
    crud = sorted(name for name in names if name in CRUD)
    other = sorted(name for name in names if name not in CRUD)
    rows = []
    for r in rounds:
        for label, phase in (("enqueue", r.tracked_enqueue), ("consume", r.tracked_consume)):
            per = phase.per_message()
            rows.append(
                [
                    str(r.number),
                    label,
                    *(f"{per.get(name, 0):.3f}" for name in crud),
                    f"**{phase.round_trips:.3f}**",
                    ", ".join(f"{name} {phase.commands[name]}" for name in other) or "none",
                ]
            )
    return _table(
        ["round", "phase", *crud, "CRUD total", "other commands (count, not per message)"], rows
    )


def _cpu(rounds: list[Round]) -> list[str]:
    rows = []
    for r in rounds:
        for label, phase in _phases(r):
            rows.append(
                [
                    str(r.number),
                    label,
                    f"{phase.window.seconds:.2f}",
                    _n(phase.cpu_us, 1),
                    _n(phase.other_cpu_us(STANDIN), 1),
                    _n(phase.other_cpu_us(BROKER), 1),
                    _n(phase.window.foreign_load, 2),
                ]
            )
    return _table(
        [
            "round",
            "phase",
            "seconds",
            "this process",
            STANDIN,
            BROKER,
            "outside the benchmark (cores busy)",
        ],
        rows,
    )


def _latency(rounds: list[Round]) -> list[str]:
    rows = []
    for r in rounds:
        phase = r.tracked_consume
        for kind in (DELIVERY_TO_ACK, CLAIM_TO_ACK, HANDLER):
            values = phase.latencies.get(kind, [])
            # The no-op handler takes microseconds: shown in µs, the rest in ms.
            scale, unit = (1000.0, "µs") if kind == HANDLER else (1.0, "ms")
            cells = [phase.percentile_ms(kind, q) for q in (50, 90, 99)]
            cells.append(max(values) * 1000 if values else None)
            rows.append(
                [
                    str(r.number),
                    f"{kind} ({unit})",
                    f"{len(values):,}",
                    *(_n(None if v is None else v * scale, 2) for v in cells),
                ]
            )
    return _table(["round", "interval", "messages", "p50", "p90", "p99", "max"], rows)


def _outcomes(rounds: list[Round]) -> str:
    parts = []
    for r in rounds:
        outcomes = ", ".join(f"{n:,} {name}" for name, n in r.tracked_consume.outcomes.items())
        dedup = r.tracked_enqueue.deduplicated
        parts.append(f"round {r.number}: {outcomes}; {dedup} enqueue(s) deduplicated")
    return "Settled deliveries in the tracked consume phase: " + "; ".join(parts) + "."


def _peers(rounds: list[Round], peers: list[PeerResult] | None, options: Options) -> list[str]:
    if peers is None:
        return ["Not run (BENCH_PEERS=0)."]
    bare = spread([r.bare_consume.rate for r in rounds])[1]
    bare_cpu = spread([r.bare_consume.cpu_us for r in rounds])[1]
    tracked = spread([r.tracked_consume.rate for r in rounds])[1]
    tracked_cpu = spread([r.tracked_consume.cpu_us for r in rounds])[1]
    # (name, setup, msg/s, CPU µs per message)
    consumers: list[tuple[str, str, float | None, float | None]] = [
        (
            "bare aio-pika (median of the rounds)",
            f"prefetch {options.concurrency}, ack each, quorum queue",
            bare,
            bare_cpu,
        ),
        (
            "tracker (median of the rounds)",
            f"`tracker.Worker`, concurrency {options.concurrency}, quorum queue, MongoDB stand-in",
            tracked,
            tracked_cpu,
        ),
    ]
    notes = []
    for peer in peers:
        if peer.skipped:
            notes.append(f"- {peer.name}: skipped, {peer.skipped}.")
            continue
        name = f"{peer.name} {peer.version}" if peer.version else peer.name
        consumers.append((name, peer.setup, peer.rate, peer.cpu_us))
        if peer.duplicates:
            notes.append(
                f"- {peer.name}: {peer.duplicates:,} deliveries ran twice (redelivered after a "
                "connection loss): its figures are disturbed."
            )
    dramatiq = next((p.cpu_us for p in peers if p.name == "Dramatiq" and p.cpu_us), None)
    header = ["consumer (no-op task)", "setup", "msg/s", "CPU µs/msg"]
    rows = [[name, setup, _n(rate), _n(cpu, 1)] for name, setup, rate, cpu in consumers]
    if dramatiq is not None:
        header.append("CPU / Dramatiq's")
        for row, (*_, cpu) in zip(rows, consumers, strict=True):
            row.append(_n(None if cpu is None else cpu / dramatiq, 2))
    lines = _table(header, rows)
    lines += [
        "",
        f"Each peer: {options.messages:,} messages published by its own client first (not "
        "timed), then drained by one worker process that times itself from its first task's "
        "start to its last task's end; CPU is that process's `time.process_time()` over the "
        "same window (all its threads). Neither peer writes anything to a database.",
    ]
    if dramatiq is not None:
        lines += ["", _yardstick(tracked_cpu / dramatiq)]
    if notes:
        lines += ["", *notes]
    return lines


def _yardstick(tracked_per_dramatiq: float) -> str:
    target_per_dramatiq = 250 / TARGET_MACHINE_DRAMATIQ_CPU_US
    on_that_machine = tracked_per_dramatiq * TARGET_MACHINE_DRAMATIQ_CPU_US / 1000
    return (
        "CPU per message differs twofold between machines, and between runs on one shared "
        "machine; a peer's, measured in the same run, is a yardstick that moves with it. "
        "The CPU target, 0.25 ms, was set on a "
        f"machine where Dramatiq took {TARGET_MACHINE_DRAMATIQ_CPU_US / 1000:.3f} ms per "
        f"message: {target_per_dramatiq:.2f} times Dramatiq's. Here the tracker takes "
        f"{tracked_per_dramatiq:.2f} times Dramatiq's, about {on_that_machine:.3f} ms on that "
        "machine."
    )


def _scrape(rows: list[ScrapeRow]) -> list[str]:
    return _table(
        [
            "executions stored",
            "mean GET /metrics",
            "body",
            "queue statistics refresh (background)",
        ],
        [
            [
                f"{row.stored:,}",
                f"{row.scrape_ms:.2f} ms",
                f"{row.body_bytes:,} B",
                f"{row.refresh_ms:.1f} ms",
            ]
            for row in rows
        ],
    )


def render(
    machine: Machine,
    options: Options,
    rounds: list[Round],
    peers: list[PeerResult] | None,
    scrape: list[ScrapeRow],
    discarded: list[str] = [],  # noqa: B006
    waits: list[str] = [],  # noqa: B006
    loaded: list[str] = [],  # noqa: B006
) -> str:
    disturbed = (
        [
            "Attempts discarded because something outside the benchmark disturbed them (a "
            "connection closed by the broker, a redelivery, more than 0.5 cores busy "
            "elsewhere), and run again:",
            "",
            *(f"- {reason}" for reason in discarded),
        ]
        if discarded
        else ["No attempt was disturbed (no connection closed by the broker, no redelivery)."]
    )
    if waits:
        disturbed += [
            "",
            "Waits for a quiet machine before a round:",
            "",
            *(f"- {w}" for w in waits),
        ]
    lines = [
        f"# Benchmark run ({machine.date})",
        "",
        *_machine(machine, options),
        "",
        "## Targets",
        "",
        "Verdict on the median over the rounds.",
        "",
        *_targets(rounds),
        "",
        "## Per round",
        "",
        "Throughput from the first delivery to the last ack (consume) or over all the calls "
        "(publish, enqueue); CPU: this process's `time.process_time()` over the consume "
        "window, per message; round trips: CRUD commands the PyMongo client sent per "
        "consumed message; latency: `after_claim` → `before_ack` (outcome durable, ack next).",
        "",
        *_per_round(rounds),
        "",
        "## Spread over the rounds",
        "",
        *_spread(rounds),
        "",
        "## Details",
        "",
        "### MongoDB commands per message, by name",
        "",
        *_commands(rounds),
        "",
        "### CPU per message by process (µs)",
        "",
        "The other processes are read from /proc (10 ms resolution) over the same window; the "
        "last column is the machine's busy CPU less the benchmark's three processes, in cores: "
        "anything else that ran meanwhile (another test suite) and competed for the cores.",
        "",
        *_cpu(rounds),
        "",
        "### Latency inside the tracked worker",
        "",
        f"`{DELIVERY_TO_ACK}`: `before_process` → `before_ack`; `{CLAIM_TO_ACK}`: "
        f"`after_claim` → `before_ack`; `{HANDLER}`: the no-op handler's own start → end.",
        "",
        *_latency(rounds),
        "",
        _outcomes(rounds),
        "",
        *disturbed,
        "",
        "## Peers",
        "",
        *_peers(rounds, peers, options),
        "",
        "## /metrics scrape cost against the stored history",
        "",
        "`tracker.web` (FastAPI on uvicorn, `HttpServer`) on the benchmark's event loop; mean of "
        "50 sequential requests, each on a new connection. The scrape renders the registry "
        "from memory; the refresh is the background `QueueStatsCollector` reading the store "
        "(on the stand-in its counts scan the queue's documents, on MongoDB they are indexed "
        "counts).",
        "",
        *_scrape(scrape),
        "",
        "## What the stand-in does not model",
        "",
        NOT_MODELLED,
        "",
    ]
    return "\n".join(lines)
