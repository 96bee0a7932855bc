"""Profile a tracked phase: ``python -m bench.profile_consume [--messages N] [--py-spy]
[--phase enqueue]``.

The same round as ``bench.run`` (warm-up first), with the profiler on from the first delivery
of the tracked consume phase to its last settled one (``--phase enqueue``: over the tracked
enqueue calls), and off everywhere else. cProfile
(default) gives exact call counts, self and cumulative times, inflated by its own overhead on
every Python call; ``--py-spy`` samples the process instead (``py-spy record``, 200 Hz,
blocking), unbiased but statistical. Both print the top entries by self and cumulative time
and the time grouped by library (PyMongo, aio-pika/aiormq/pamqp, the tracker by module,
asyncio, structlog, pydantic, prometheus_client, …), and write their raw data to
bench/results/.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tracker
from bench.machine import tracker_digest
from bench.mongo_commands import CommandCounter
from bench.options import RESULTS, parse
from bench.profile_analysis import cprofile_report, pyspy_report
from bench.run import Bench, Disturbed, _say, _setup
from tests.mongo_standin import StandIn
from tracker.logging import configure_logging
from tracker.service import event_loop
from tracker.settings import Settings

RATE = 200


class PySpy:
    """``py-spy record`` on this process, from ``start()`` to ``stop()``."""

    def __init__(self, output: Path, rate: int, pid: int | None = None) -> None:
        self.output = output
        self.rate = rate
        self.pid = os.getpid() if pid is None else pid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.stop()  # an attempt discarded before its end left one running
        self.wait()
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--full-filenames",
                "--function",
                "--output",
                str(self.output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=60)


def render(sampler: str, data: Path, facts: dict[str, Any], rate: int) -> str:
    messages = int(facts["messages"])
    phase = facts.get("phase", "consume")
    header = [f"# Profile of the tracked {phase} phase ({sampler})", ""]
    if "rate" in facts:
        header += [
            f"{messages:,} messages; while profiled the phase ran at {facts['rate']:,.0f} "
            f"msg/s with {facts['cpu_us']:,.0f} µs of CPU per message (unprofiled runs are "
            f"faster) and {facts['round_trips']:.3f} MongoDB round trips per message "
            f"({facts['commands']}). Tracker sources {facts['digest']}.",
            "",
        ]
    if sampler == "cprofile":
        body = cprofile_report(pstats.Stats(str(data)), messages)
    else:
        body = pyspy_report(data, messages, rate)
    return "\n".join(header + body)


async def record(
    messages: int,
    sampler: str,
    data: Path,
    rate: int,
    standin: bool = False,
    phase_name: str = "consume",
) -> dict[str, Any]:
    """Run a warm-up round, then a round whose tracked ``phase_name`` phase ("consume" or
    "enqueue") is profiled into ``data`` (the MongoDB stand-in's process instead of this one
    when ``standin``); the facts of that phase."""
    options = parse([], {**os.environ, "BENCH_MESSAGES": str(messages), "BENCH_PEERS": "0"})
    configure_logging("json", "WARNING")
    for name in ("TRACKER_HTTP_PORT", "TRACKER_METRICS_PORT"):
        os.environ.pop(name, None)
    commands = CommandCounter().register()
    profiler: cProfile.Profile | None = None
    spy: PySpy | None = None
    on: Callable[[], None]
    off: Callable[[], None]
    if sampler == "py-spy":
        spy = PySpy(data, rate)
        on, off = spy.start, spy.stop
    else:
        profiler = cProfile.Profile()

        def on() -> None:
            assert profiler is not None
            profiler.disable()
            profiler.clear()  # an attempt discarded before its end left data behind
            profiler.enable()

        off = profiler.disable
    async with StandIn() as server:
        if spy is not None and standin:
            spy.pid = server.pid or 0
        probe = await _setup(server, options)
        bench = Bench(options, probe, commands)
        try:
            _say(f"warm-up round: {options.warmup:,} messages")
            await bench.measured_round(0, options.warmup, check_load=False)
            _say(f"profiled round ({sampler}): {options.messages:,} messages")
            done = await bench.measured_round(
                1, options.messages, on_first=on, on_last=off, profiled=phase_name
            )
        finally:
            await tracker.disconnect()
            await bench.scratch.delete_all()
    if profiler is not None:
        profiler.dump_stats(str(data))
    if spy is not None:
        spy.wait()
    phase = done.tracked_enqueue if phase_name == "enqueue" else done.tracked_consume
    return {
        "phase": phase_name,
        "messages": phase.messages,
        "rate": phase.rate,
        "cpu_us": phase.cpu_us,
        "round_trips": phase.round_trips,
        "commands": ", ".join(f"{k} {v:.3f}" for k, v in phase.per_message().items()),
        "digest": tracker_digest(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_consume", description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--py-spy", action="store_true", help="sample with py-spy instead")
    parser.add_argument("--rate", type=int, default=RATE, help="py-spy samples per second")
    parser.add_argument(
        "--standin",
        action="store_true",
        help="sample the MongoDB stand-in's process instead of the consumer's (implies --py-spy)",
    )
    parser.add_argument(
        "--phase",
        choices=("consume", "enqueue"),
        default="consume",
        help="the tracked phase to profile: the worker's consume (default) or the enqueue calls",
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="render a profile recorded before (its .prof or py-spy .txt) instead",
    )
    args = parser.parse_args(argv)
    sampler = "py-spy" if args.py_spy or args.standin else "cprofile"
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"profile-{args.phase}"
    if args.standin:
        name = "profile-standin" + ("" if args.phase == "consume" else f"-{args.phase}")
    data = args.source or RESULTS / (f"{name}.pyspy.txt" if sampler == "py-spy" else f"{name}.prof")
    sidecar = data.with_suffix(".json")
    if args.source is None:
        try:
            facts = event_loop.run(
                record(args.messages, sampler, data, args.rate, args.standin, args.phase),
                Settings.from_env().event_loop,
            )
        except Disturbed as exc:
            _say(f"no profile: {exc} (BENCH_ATTEMPTS sets how often to try)")
            return 1
        sidecar.write_text(json.dumps(facts))
    else:
        facts = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        facts.setdefault("messages", args.messages)
    text = render(sampler, data, facts, args.rate)
    data.with_name(data.stem + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
