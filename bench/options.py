"""The options of one benchmark run, from the environment and the command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RESULTS = Path(__file__).resolve().parent / "results"
ENV_NAMES = (
    "BENCH_MESSAGES",
    "BENCH_ROUNDS",
    "BENCH_CONCURRENCY",
    "BENCH_PEERS",
    "BENCH_QUIET_WAIT",
    "BENCH_ATTEMPTS",
)


@dataclass(frozen=True)
class Options:
    """``messages`` per phase, ``rounds`` of (bare, tracked), ``concurrency``: messages in
    flight when publishing and the prefetch when consuming; ``peers``: run Dramatiq and
    Celery when installed; ``warmup``: messages of the untimed round before the first;
    ``history``: executions stored for the two scrape measurements; ``quiet_wait``: how
    long to wait before each round for other processes to leave the cores alone;
    ``attempts``: how often a round is tried while something disturbs the broker."""

    messages: int
    rounds: int
    concurrency: int
    peers: bool
    quick: bool
    amqp_url: str
    warmup: int
    history: tuple[int, int]
    command: str
    quiet_wait: float = 90.0
    attempts: int = 5

    @property
    def out(self) -> Path:
        return RESULTS / "latest.md"

    @property
    def timeout(self) -> float:
        """How long one phase may take before the run fails: generous, but bounded."""
        return 120.0 + self.messages / 50


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}")
    return value


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Options:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Bare aio-pika against the tracker on the same RabbitMQ, with the real "
        "PyMongo client against the MongoDB stand-in (docs/benchmarks.md).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 2,000 messages, 1 round, no peers unless BENCH_PEERS=1",
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    messages = _int(env, "BENCH_MESSAGES", 2000 if quick else 20000)
    rounds = _int(env, "BENCH_ROUNDS", 1 if quick else 3)
    concurrency = _int(env, "BENCH_CONCURRENCY", 100)
    peers = _int(env, "BENCH_PEERS", 0 if quick else 1, minimum=0) != 0
    shown = [f"{name}={env[name]}" for name in ENV_NAMES if env.get(name)]
    command = " ".join(
        [*shown, "python -m bench.run", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]
    )
    return Options(
        messages=messages,
        rounds=rounds,
        concurrency=concurrency,
        peers=peers,
        quick=quick,
        amqp_url=env.get("TRACKER_AMQP_URL") or DEFAULT_AMQP_URL,
        warmup=min(messages, 1000),
        history=(100, max(messages, 1000)),
        command=command,
        attempts=_int(env, "BENCH_ATTEMPTS", 5),
        quiet_wait=float(_int(env, "BENCH_QUIET_WAIT", 10 if quick else 90, minimum=0)),
    )
