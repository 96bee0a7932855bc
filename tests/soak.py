"""The fault soak: "a handler never runs twice, whatever happens".

    python -m tests.soak --tasks 3000 --workers 4

Starts a private RabbitMQ node (tests/broker_nodes.py) and a MongoDB stand-in process
(tests/mongo_standin), then W worker processes (tests/soak_worker.py) on one queue, publishes N
tasks at a steady pace over ``--seconds`` (default N / 40) and meanwhile injects the faults of
the schedule: ``close`` (``rabbitmqctl close_all_connections``), ``node-kill`` (SIGKILL of the
node, then a start), ``node-stop`` (a graceful stop, then a start) and ``worker-kill`` (SIGKILL
of a worker process while it is inside a long handler, then a replacement process). Each fault
is placed at a fraction of the publishing window: ``--schedule close@0.1,worker-kill@0.3,...``.

Then it waits (bounded by ``--drain-timeout``) until every task's latest execution is
``completed`` or ``dlq``, stops the workers and checks what happened:

- ``completed + dlq == N``, none ``lost``; each task ends as its payload's fate says;
- no task has two ``completed`` executions (``completed_twice``);
- the handler's completions (a line each, appended by the worker before the handler returns):
  a task whose handler completed more than once is allowed only when every extra run is
  explained by the documented at-least-once case, a run whose outcome was never recorded
  because its claim was superseded (crash points 3 and 10): its process was SIGKILLed
  (``rerun_after_kill``) or its lease lapsed and another worker took the execution over
  (``rerun_after_lost_claim``). Anything else is ``twice`` and must be 0;
- no execution was taken over before its lease could have lapsed, and every recorded
  completion was recorded by a worker whose handler ran to completion.

"None lost" is checked with the workers' sweeper on (``--republish-after``, 20 s here): it is
the documented safety net for a queued execution whose message is gone. Every execution it had
to republish is counted (``republished_by_sweeper``) and listed in ``notes``; a RabbitMQ restart
while retries wait in a delay queue loses some of them (dead-lettering is at-most-once), and
``--republish-after 600`` (the default of ``tracker.Worker``) shows those as lost. The summary
also counts enqueues that failed with an exception other than ``PublishError`` and left their
execution queued and unmarked (``publish_errors.orphaned_by_failed_enqueue``): the soak marks
them unconfirmed, as ``Enqueuer`` does a maybe-published message, and enqueues them again.
A task's attempts are ordered by ``retryCount`` (each soak task is enqueued once);
``chain_misordered`` counts the tasks whose ``TaskTracker.find_retry_chain`` order (by
``createdAt``, stamped by each process from its estimate of the server's clock) disagrees.

Prints the summary as JSON on stdout (progress on stderr) and exits 1 if anything was wrong.
The work directory (trace files, worker logs, the records of unfinished tasks) is kept when
the soak fails, or with ``--keep``. tests/test_fault_soak.py runs a small soak under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

import tracker
from tests.broker_nodes import PrivateNode, cleanup_stale, find_free_ports
from tests.mongo_standin import StandIn
from tracker import TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.store import connection

ROOT = Path(__file__).resolve().parents[1]
FAULT_KINDS = ("close", "node-kill", "node-stop", "worker-kill")
DEFAULT_SCHEDULE = (
    "close@0.1,worker-kill@0.2,close@0.3,node-kill@0.4,close@0.5,worker-kill@0.6,close@0.7,"
    "node-stop@0.8,close@0.9"
)
FINAL = (TaskStatus.COMPLETED, TaskStatus.DLQ)
# Claims are stamped with millisecond resolution; a takeover earlier than the lease by more
# than this is an early takeover.
CLOCK_TOLERANCE = 0.05


class SoakError(RuntimeError):
    """The soak itself could not go on (a node or a worker did not start, ...)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # a fraction of the publishing window

    def __str__(self) -> str:
        return f"{self.kind}@{self.at:g}"


def parse_schedule(text: str) -> tuple[Fault, ...]:
    """``"close@0.1,node-kill@0.45"`` -> the faults, in time order."""
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, at = item.partition("@")
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(f"fault {item!r}: write KIND@FRACTION, KIND one of {FAULT_KINDS}")
        fraction = float(at)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fault {item!r}: the fraction must be within 0..1")
        faults.append(Fault(kind, fraction))
    return tuple(sorted(faults, key=lambda fault: fault.at))


@dataclass(frozen=True)
class SoakConfig:
    """``seconds``: the publishing window, in which the faults land; ``transient``/``invalid``:
    fractions of tasks whose first attempt raises ``TransientError`` / that are dead-lettered;
    ``long``: the fraction of long runs (``long_seconds``), besides the ``planted`` ones
    published just before each fault; ``drain_timeout``: how long after the window every task
    may take to reach a final record; ``victim_wait``: how long a ``worker-kill`` waits for a
    worker to be inside a long handler (then it kills one anyway); ``republish_after``: the
    workers' sweeper republishes executions left queued that long (the documented safety net
    for a queued execution whose message is gone; each one it needed is counted)."""

    tasks: int = 200
    workers: int = 3
    seconds: float = 20.0
    schedule: tuple[Fault, ...] = parse_schedule(DEFAULT_SCHEDULE)
    concurrency: int = 10
    lease: float = 2.0
    requeue_delay: float = 0.2
    transient: float = 0.1
    invalid: float = 0.03
    long: float = 0.01
    long_seconds: tuple[float, float] = (1.0, 2.0)
    planted: int = 4
    node_down: float = 1.0
    drain_timeout: float = 90.0
    victim_wait: float = 15.0
    sweep_interval: float = 5.0
    republish_after: float = 20.0
    seed: int | None = None
    keep: bool = False


@dataclass(frozen=True)
class Plan:
    """One task: what its handler does (the worker reads it from the payload)."""

    n: int
    task_id: str
    fate: str  # ok | transient | invalid
    sleep: float  # 0: a short run

    def payload(self) -> dict[str, Any]:
        return {"n": self.n, "fate": self.fate, "sleep": round(self.sleep, 3)}

    @property
    def expected(self) -> TaskStatus:
        return TaskStatus.DLQ if self.fate == "invalid" else TaskStatus.COMPLETED


def plan_tasks(config: SoakConfig, rng: random.Random) -> list[Plan]:
    plans = []
    for n in range(config.tasks):
        draw = rng.random()
        fate = (
            "invalid"
            if draw < config.invalid
            else "transient"
            if draw < config.invalid + config.transient
            else "ok"
        )
        sleep = rng.uniform(*config.long_seconds) if rng.random() < config.long else 0.0
        plans.append(Plan(n, f"soak-{n:06d}", fate, sleep))
    # Long runs published just before each fault, so that handlers are in flight when it
    # lands (a worker kill needs one to pick its victim).
    for fault in config.schedule:
        at = int(fault.at * config.tasks)
        for n in range(max(0, at - config.planted), min(config.tasks, at)):
            plans[n] = Plan(n, plans[n].task_id, plans[n].fate, config.long_seconds[1])
    return plans


# --------------------------------------------------------------------------- traces


@dataclass(frozen=True)
class Start:
    task_id: str
    execution_id: str
    worker: str
    pid: int
    retry_count: int
    long: bool
    at: float

    @property
    def worker_id(self) -> str:
        return f"{self.worker}:{self.pid}"


@dataclass(frozen=True)
class Completion:
    task_id: str
    execution_id: str
    worker: str
    pid: int

    @property
    def worker_id(self) -> str:
        return f"{self.worker}:{self.pid}"


def _lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines() if line.strip()]


def read_starts(path: Path) -> list[Start]:
    return [
        Start(f[1], f[2], f[3], int(f[4]), int(f[5]), f[6] == "1", float(f[7]))
        for f in _lines(path)
        if len(f) == 8 and f[0] == "start"
    ]


def read_completions(path: Path) -> list[Completion]:
    return [Completion(f[0], f[1], f[2], int(f[3])) for f in _lines(path) if len(f) == 4]


# --------------------------------------------------------------------------- workers


class WorkerProcess:
    """A ``tests.soak_worker`` process, its stdout and stderr in ``logdir``."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.out_path = logdir / f"{name}.out"
        with self.out_path.open("wb") as out, self.log_path.open("wb") as err:
            self.process = subprocess.Popen(
                [*argv, "--id", name],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.killed = False

    @property
    def worker_id(self) -> str:
        return f"{self.name}:{self.pid}"

    def alive(self) -> bool:
        return self.process.poll() is None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.out_path.read_text():
            if not self.alive():
                raise SoakError(
                    f"worker {self.name} exited with {self.process.returncode}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise SoakError(f"worker {self.name} not ready after {timeout}s: {self.tail()}")
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)

    async def terminate(self, timeout: float = 20.0) -> None:
        """SIGTERM (the worker stops gracefully), SIGKILL after ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            await self.kill()

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


# --------------------------------------------------------------------------- the report


@dataclass
class SoakReport:
    tasks: int
    workers: int
    seconds: float
    seed: int
    schedule: str
    faults: Counter[str] = field(default_factory=Counter)
    expected_dlq: int = 0
    completed: int = 0
    dlq: int = 0
    lost: int = 0
    twice: int = 0
    rerun_after_kill: int = 0
    rerun_after_lost_claim: int = 0
    completed_twice: int = 0
    handler_completions: int = 0
    failed_attempts: int = 0
    republished_by_sweeper: int = 0
    chain_misordered: int = 0
    takeovers: Counter[str] = field(default_factory=Counter)
    publish_errors: Counter[str] = field(default_factory=Counter)
    log_events: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drained: bool = False
    wall_seconds: float = 0.0
    workdir: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def summary(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "workers": self.workers,
            "seconds": self.seconds,
            "seed": self.seed,
            "schedule": self.schedule,
            "faults": dict(self.faults),
            "completed": self.completed,
            "dlq": self.dlq,
            "expected_dlq": self.expected_dlq,
            "lost": self.lost,
            "twice": self.twice,
            "rerun_after_kill": self.rerun_after_kill,
            "rerun_after_lost_claim": self.rerun_after_lost_claim,
            "completed_twice": self.completed_twice,
            "handler_completions": self.handler_completions,
            "failed_attempts": self.failed_attempts,
            "republished_by_sweeper": self.republished_by_sweeper,
            "chain_misordered": self.chain_misordered,
            "takeovers": dict(self.takeovers),
            "publish_errors": dict(self.publish_errors),
            "log_events": dict(self.log_events.most_common(15)),
            "problems": self.problems[:50],
            "notes": self.notes[:50],
            "ok": self.ok,
            "wall_seconds": round(self.wall_seconds, 1),
            "workdir": self.workdir,
        }

    def explain(self) -> str:
        return json.dumps(self.summary(), indent=2)


# --------------------------------------------------------------------------- runs


@dataclass
class RunCheck:
    """``outcomes``: one per completed run beyond the one that recorded the completion:
    ``rerun_after_kill``, ``rerun_after_lost_claim`` or ``twice`` (unexplained)."""

    outcomes: list[str] = field(default_factory=list)
    takeovers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def check_runs(
    execution: TaskTracker, runs: Sequence[Completion], killed_pids: set[int], lease: float
) -> RunCheck:
    """Account for each completed handler run of ``execution`` (``runs``, from the
    completions file): one recorded the completion; each other one must have held a claim
    that was superseded later (its process was killed, or its lease lapsed and another
    worker took over). Also: no claim was taken over before its ``lease`` could lapse."""
    checked = RunCheck()
    where = f"{execution.task_id} {execution.execution_id}"
    claims = [
        (entry.worker or "?", entry.at)
        for entry in execution.history
        if entry.status is TaskStatus.PROCESSING
    ]
    for (holder, claimed_at), (_, taken_at) in itertools.pairwise(claims):
        pid = int(holder.rsplit(":", 1)[-1]) if holder[-1:].isdigit() else -1
        checked.takeovers["after_kill" if pid in killed_pids else "of_live_holder"] += 1
        held = (taken_at - claimed_at).total_seconds()
        if held < lease - CLOCK_TOLERANCE:
            checked.problems.append(
                f"{where}: claim of {holder} taken over {held:.3f}s after it was made, "
                f"before its {lease:g}s lease could lapse"
            )
    remaining = list(runs)
    if execution.status is TaskStatus.COMPLETED:
        recorder = next(
            (
                entry.worker
                for entry in reversed(execution.history)
                if entry.status is TaskStatus.COMPLETED
            ),
            None,
        )
        mine = next((run for run in remaining if run.worker_id == recorder), None)
        if mine is None:
            checked.problems.append(
                f"{where}: completion recorded by {recorder}, whose handler never completed it"
            )
        else:
            remaining.remove(mine)
    superseded = Counter(holder for holder, _ in claims[:-1])
    for run in remaining:
        if superseded[run.worker_id] > 0:
            superseded[run.worker_id] -= 1
            killed = run.pid in killed_pids
            checked.outcomes.append("rerun_after_kill" if killed else "rerun_after_lost_claim")
        else:
            checked.outcomes.append("twice")
            checked.problems.append(
                f"{where}: the handler completed again in {run.worker_id}, whose claim was "
                f"never superseded (claims: {[holder for holder, _ in claims]}, status "
                f"{execution.status.value})"
            )
    return checked


# --------------------------------------------------------------------------- the soak


class Soak:
    """One soak run: ``run()`` sets everything up, injects the faults, waits, checks and tears
    down; ``interrupt()`` (from a signal handler) cuts it short, teardown included."""

    def __init__(self, config: SoakConfig, node: PrivateNode | None = None) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else secrets.randbits(32)
        self.rng = random.Random(self.seed)
        self.plans = plan_tasks(config, self.rng)
        token = secrets.token_hex(4)
        self.queue = f"soak-{token}"
        self.database = f"soak_{token}"
        self.node = node
        self.workdir = Path(tempfile.mkdtemp(prefix="tracker-soak-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir()
        self.completions_path = self.workdir / "completions"
        self.starts_path = self.workdir / "starts"
        self.workers: list[WorkerProcess] = []
        self.killed_pids: set[int] = set()
        self.fault_log: list[dict[str, Any]] = []
        self.mongo_url = ""
        self._t0 = time.monotonic()
        self._next_worker = 1
        self.interrupted = False
        self._main: asyncio.Task[None] | None = None
        self._node_ops: set[asyncio.Future[Any]] = set()
        self.report = SoakReport(
            tasks=config.tasks,
            workers=config.workers,
            seconds=config.seconds,
            seed=self.seed,
            schedule=",".join(str(fault) for fault in config.schedule),
            expected_dlq=sum(plan.fate == "invalid" for plan in self.plans),
        )

    def say(self, message: str) -> None:
        line = f"[soak {time.monotonic() - self._t0:6.1f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        with (self.workdir / "soak.log").open("a") as log:
            log.write(line + "\n")

    # ----------------------------------------------------------------- the run

    def interrupt(self) -> None:
        """Stop the soak (a signal): every loop checks the flag, the run is cancelled, and
        everything it started is torn down."""
        self.interrupted = True
        if self._main is not None:
            self._main.cancel()

    def _check_interrupted(self) -> None:
        if self.interrupted:
            raise SoakError("interrupted")

    async def run(self) -> SoakReport:
        self._t0 = time.monotonic()
        report = self.report
        self.say(
            f"{self.config.tasks} tasks, {self.config.workers} workers, "
            f"{self.config.seconds:g}s, seed {self.seed}, faults {report.schedule}, "
            f"workdir {self.workdir}"
        )
        try:
            self._main = asyncio.create_task(self._run())
            try:
                await self._main
            except asyncio.CancelledError:
                if not self.interrupted:
                    raise
                raise SoakError("interrupted") from None
        except BaseException as error:
            report.problem(f"the soak failed: {error!r}")
            raise
        finally:
            report.wall_seconds = time.monotonic() - self._t0
            self._finish()
        return report

    async def _run(self) -> None:
        report = self.report
        async with contextlib.AsyncExitStack() as stack:
            node = await self._node(stack)
            standin = await stack.enter_async_context(StandIn())
            self.mongo_url = standin.url
            await tracker.connect(standin.url, self.database)
            stack.push_async_callback(tracker.disconnect)
            await connection.ensure_indexes()  # what `tracker migrate` does
            stack.push_async_callback(self._stop_workers)
            await asyncio.gather(*(self._spawn() for _ in range(self.config.workers)))
            self.say(f"node {node.nodename} on {node.amqp_port}, workers ready")
            async with tracker.Publisher(node.url) as publisher:
                start = asyncio.get_running_loop().time()
                await asyncio.gather(
                    self._publish_all(publisher, start), self._inject_faults(start)
                )
            self.say("published; faults done; waiting for every task to be final")
            report.drained = await self._wait_final()
            self.say("final" if report.drained else "drain deadline passed")
            await self._stop_workers()
            await self._analyse()

    async def _node(self, stack: contextlib.AsyncExitStack) -> PrivateNode:
        if self.node is None:
            await asyncio.to_thread(cleanup_stale)
            node = PrivateNode(f"soak{secrets.token_hex(2)}", find_free_ports(1)[0])
            stack.push_async_callback(asyncio.to_thread, node.close)
            stack.push_async_callback(self._settle_node_ops)
            await self._node_call(node.start)
            self.node = node
        else:
            stack.push_async_callback(self._settle_node_ops)
        return self.node

    async def _node_call(self, operation: Any, *args: Any) -> Any:
        """A blocking node operation on a thread. A cancellation does not stop a thread, so
        the operation is shielded and tracked: teardown waits for it before it closes the
        node (or returns it to the fixture that owns it)."""
        future = asyncio.ensure_future(asyncio.to_thread(operation, *args))
        self._node_ops.add(future)
        future.add_done_callback(self._node_ops.discard)
        return await asyncio.shield(future)

    async def _settle_node_ops(self) -> None:
        await asyncio.gather(*self._node_ops, return_exceptions=True)

    def _finish(self) -> None:
        report = self.report
        (self.workdir / "faults.json").write_text(json.dumps(self.fault_log, indent=2))
        (self.workdir / "report.json").write_text(report.explain())
        if report.ok and not self.config.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            report.workdir = None
        else:
            report.workdir = str(self.workdir)

    # ----------------------------------------------------------------- workers

    def _worker_argv(self) -> list[str]:
        assert self.node is not None
        config = self.config
        return [
            sys.executable,
            "-m",
            "tests.soak_worker",
            "--amqp",
            self.node.url,
            "--mongodb",
            self.mongo_url,
            "--database",
            self.database,
            "--queue",
            self.queue,
            "--completions",
            str(self.completions_path),
            "--starts",
            str(self.starts_path),
            "--concurrency",
            str(config.concurrency),
            "--lease",
            str(config.lease),
            "--requeue-delay",
            str(config.requeue_delay),
            "--sweep-interval",
            str(config.sweep_interval),
            "--republish-after",
            str(config.republish_after),
            "--parent",
            str(os.getpid()),
        ]

    async def _spawn(self) -> WorkerProcess:
        name = f"w{self._next_worker}"
        self._next_worker += 1
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("TRACKER_METRICS_PORT", "TRACKER_MONGODB_URL", "TRACKER_AMQP_URL")
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        worker = WorkerProcess(name, self._worker_argv(), self.logdir, env)
        self.workers.append(worker)
        await worker.wait_ready()
        return worker

    async def _stop_workers(self) -> None:
        await asyncio.gather(*(worker.terminate() for worker in self.workers))

    # ----------------------------------------------------------------- publishing

    async def _publish_all(self, publisher: tracker.Publisher, start: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.seconds / max(1, len(self.plans))
        for plan in self.plans:
            self._check_interrupted()
            delay = start + plan.n * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._publish(publisher, plan)

    async def _publish(self, publisher: tracker.Publisher, plan: Plan) -> None:
        """Enqueue the task; after a failure, enqueue again unless its message demonstrably
        existed (the execution moved on), as docs/consumers.md says is safe."""
        for _ in range(240):
            self._check_interrupted()
            try:
                await publisher.enqueue(self.queue, plan.payload(), task_id=plan.task_id)
                return
            except Exception as error:
                self.report.publish_errors[type(error).__name__] += 1
            await asyncio.sleep(0.5)
            chain = await TaskTracker.find_retry_chain(plan.task_id)
            if chain and chain[-1].status is not TaskStatus.QUEUED:
                return
            if chain and chain[-1].publish_unconfirmed_at is None:
                # The enqueue raised something other than PublishError (aio-pika's
                # ChannelInvalidStateError while its robust connection reconnects): the
                # execution was neither rolled back nor marked unconfirmed, and enqueueing
                # again would not publish it (only the sweeper's republish_after, 10 min by
                # default, would). Settle it as Enqueuer does a maybe-published message, so
                # the next enqueue publishes it again; counted, the summary shows it.
                self.report.publish_errors["orphaned_by_failed_enqueue"] += 1
                await connection.collection().update_one(
                    {"executionId": chain[-1].execution_id, "status": TaskStatus.QUEUED.value},
                    {"$set": {"publishUnconfirmedAt": utcnow()}},
                )
        raise SoakError(f"could not enqueue {plan.task_id} for two minutes")

    # ----------------------------------------------------------------- faults

    async def _inject_faults(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        for fault in self.config.schedule:
            self._check_interrupted()
            delay = start + fault.at * self.config.seconds - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.monotonic()
            detail = await self._inject(fault)
            self.fault_log.append(
                {
                    "fault": str(fault),
                    "t": round(began - self._t0, 2),
                    "took": round(time.monotonic() - began, 2),
                    **detail,
                }
            )
            self.say(f"fault {fault}: {detail}")

    async def _inject(self, fault: Fault) -> dict[str, Any]:
        node = self.node
        assert node is not None
        faults = self.report.faults
        if fault.kind == "close":
            await self._node_call(node.close_connections, "soak: connections closed")
            faults["close_connections"] += 1
            return {}
        if fault.kind in ("node-kill", "node-stop"):
            await self._node_call(node.kill if fault.kind == "node-kill" else node.stop)
            await asyncio.sleep(self.config.node_down)
            await self._node_call(node.start, 90.0)
            faults["node_restart"] += 1
            faults[fault.kind] += 1
            return {}
        return await self._kill_worker()

    async def _kill_worker(self) -> dict[str, Any]:
        """SIGKILL a worker inside a long handler (any worker after ``victim_wait``), then
        start a replacement."""
        deadline = time.monotonic() + self.config.victim_wait
        victim: tuple[WorkerProcess, Start | None] | None = None
        while victim is None:
            self._check_interrupted()
            found = self._find_victim()
            if found is not None:
                victim = found
            elif time.monotonic() > deadline:
                live = [w for w in self.workers if w.alive() and not w.killed]
                victim = (self.rng.choice(live), None)
            else:
                await asyncio.sleep(0.05)
        worker, run = victim
        await worker.kill()
        self.killed_pids.add(worker.pid)
        self.report.faults["worker_kill"] += 1
        mid_handler = run is not None and not any(
            c.execution_id == run.execution_id and c.pid == worker.pid
            for c in read_completions(self.completions_path)
        )
        self.report.faults["worker_kill_mid_long_handler"] += mid_handler
        replacement = await self._spawn()
        self.report.faults["replacement_worker"] += 1
        return {
            "killed": worker.worker_id,
            "inside": None if run is None else f"{run.task_id} {run.execution_id}",
            "mid_handler": mid_handler,
            "replacement": replacement.worker_id,
        }

    def _find_victim(self) -> tuple[WorkerProcess, Start] | None:
        live = {w.pid: w for w in self.workers if w.alive() and not w.killed}
        done = {(c.execution_id, c.pid) for c in read_completions(self.completions_path)}
        now = time.time()
        for run in reversed(read_starts(self.starts_path)):
            if (
                run.long
                and run.pid in live
                and (run.execution_id, run.pid) not in done
                and now - run.at < self.config.long_seconds[0] / 2
            ):
                return live[run.pid], run
        return None

    # ----------------------------------------------------------------- waiting

    async def _wait_final(self) -> bool:
        deadline = time.monotonic() + self.config.drain_timeout
        total = self.config.tasks
        while True:
            self._check_interrupted()
            stats = await TaskTracker.get_queue_stats(self.queue)
            if (
                stats["queued"] == 0
                and stats["processing"] == 0
                and stats["completed"] + stats["dlq"] >= total
            ):
                return True
            if time.monotonic() > deadline:
                self.say(f"not final: {stats}")
                return False
            await asyncio.sleep(0.5)

    # ----------------------------------------------------------------- checking

    async def _analyse(self) -> None:
        report = self.report
        records = await TaskTracker.find({"queueName": self.queue}).to_list()
        chains: dict[str, list[TaskTracker]] = defaultdict(list)
        for record in records:
            chains[record.task_id].append(record)
        for task_id, chain in chains.items():
            # A soak task is enqueued once: its executions follow one another by retryCount.
            # (find_retry_chain orders by createdAt, which each process stamps from its own
            # estimate of the server's clock: counted when the two orders disagree.)
            chain.sort(key=lambda doc: (doc.retry_count, doc.created_at))
            by_created = sorted(chain, key=lambda doc: (doc.created_at, doc.retry_count))
            if by_created != chain:
                report.chain_misordered += 1
                report.notes.append(
                    f"{task_id}: find_retry_chain order "
                    f"{[(doc.retry_count, doc.status.value) for doc in by_created]} (by createdAt "
                    f"{[doc.created_at.time().isoformat() for doc in by_created]})"
                )
        runs: dict[str, list[Completion]] = defaultdict(list)
        for completion in read_completions(self.completions_path):
            runs[completion.execution_id].append(completion)
        report.handler_completions = sum(len(r) for r in runs.values())
        planned = {plan.task_id: plan for plan in self.plans}
        unfinished: dict[str, list[dict[str, Any]]] = {}
        for task_id in sorted(set(chains) - set(planned)):
            report.problem(f"{task_id}: a record of a task that was never published")
        for plan in self.plans:
            chain = chains.get(plan.task_id, [])
            self._check_task(plan, chain, runs)
            if not chain or chain[-1].status not in FINAL:
                unfinished[plan.task_id] = [doc.to_document() for doc in chain]
        for record in records:
            if record.republished_at is not None:
                report.republished_by_sweeper += 1
                report.notes.append(
                    f"{record.task_id} {record.execution_id} (retry {record.retry_count}, "
                    f"{record.status.value}): its message republished by the sweeper"
                )
        for execution_id in set(runs) - {doc.execution_id for doc in records}:
            report.problem(f"a handler completed execution {execution_id}, which has no record")
        if unfinished:
            (self.workdir / "unfinished.json").write_text(
                json.dumps(unfinished, indent=1, default=str)
            )
        if not report.ok:
            with (self.workdir / "records.jsonl").open("w") as out:
                for record in records:
                    out.write(json.dumps(record.to_document(), default=str) + "\n")
        self._count_log_events()

    def _check_task(
        self, plan: Plan, chain: list[TaskTracker], runs: dict[str, list[Completion]]
    ) -> None:
        report = self.report
        task_id = plan.task_id
        if not chain or chain[-1].status not in FINAL:
            report.lost += 1
            state = [doc.status.value for doc in chain] or "no record"
            report.problem(f"{task_id}: lost (its executions: {state})")
        elif chain[-1].status is TaskStatus.COMPLETED:
            report.completed += 1
        else:
            report.dlq += 1
        if chain and chain[-1].status in FINAL and chain[-1].status is not plan.expected:
            report.problem(
                f"{task_id}: ended {chain[-1].status.value}, expected {plan.expected.value}"
            )
        completed = [doc for doc in chain if doc.status is TaskStatus.COMPLETED]
        if len(completed) > 1:
            report.completed_twice += 1
            report.problem(f"{task_id}: {len(completed)} completed executions")
        failed = sum(doc.status is TaskStatus.FAILED for doc in chain)
        report.failed_attempts += failed
        if failed != (plan.fate == "transient"):
            report.problem(f"{task_id} ({plan.fate}): {failed} failed attempts")
        explained: Counter[str] = Counter()
        for execution in chain:
            for outcome in self._check_runs(execution, runs.get(execution.execution_id, [])):
                explained[outcome] += 1
        if explained["twice"]:
            report.twice += 1
        elif explained["rerun_after_kill"]:
            report.rerun_after_kill += 1
        elif explained["rerun_after_lost_claim"]:
            report.rerun_after_lost_claim += 1

    def _check_runs(self, execution: TaskTracker, runs: list[Completion]) -> list[str]:
        checked = check_runs(execution, runs, self.killed_pids, self.config.lease)
        self.report.takeovers.update(checked.takeovers)
        self.report.problems.extend(checked.problems)
        return checked.outcomes

    def _count_log_events(self) -> None:
        """The workers' log lines (above debug), by event."""
        events = self.report.log_events
        for worker in self.workers:
            with contextlib.suppress(OSError):
                for line in worker.log_path.read_text(errors="replace").splitlines():
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        if line.startswith("Traceback"):
                            events["(traceback outside the log)"] += 1
                        continue
                    if (
                        isinstance(entry, dict)
                        and entry.get("level") != "debug"
                        and entry.get("event") not in ("worker started", "worker stopped")
                    ):
                        events[f"{entry.get('level')}: {entry.get('event')}"] += 1


async def run_soak(config: SoakConfig, node: PrivateNode | None = None) -> SoakReport:
    """Run one soak; ``node``: a started private node to use (else one of its own)."""
    return await Soak(config, node).run()


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> SoakConfig:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SoakConfig()
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--seconds", type=float, default=None, help="the publishing window (default: N / 40)"
    )
    parser.add_argument("--schedule", default=DEFAULT_SCHEDULE, help="KIND@FRACTION,...")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--lease", type=float, default=defaults.lease)
    parser.add_argument("--requeue-delay", type=float, default=defaults.requeue_delay)
    parser.add_argument("--transient", type=float, default=defaults.transient)
    parser.add_argument("--invalid", type=float, default=defaults.invalid)
    parser.add_argument("--long", type=float, default=defaults.long)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--sweep-interval", type=float, default=defaults.sweep_interval)
    parser.add_argument("--victim-wait", type=float, default=defaults.victim_wait)
    parser.add_argument("--republish-after", type=float, default=defaults.republish_after)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    return SoakConfig(
        tasks=args.tasks,
        workers=args.workers,
        seconds=args.seconds if args.seconds is not None else max(20.0, args.tasks / 40),
        schedule=parse_schedule(args.schedule),
        concurrency=args.concurrency,
        lease=args.lease,
        requeue_delay=args.requeue_delay,
        transient=args.transient,
        invalid=args.invalid,
        long=args.long,
        drain_timeout=args.drain_timeout,
        victim_wait=args.victim_wait,
        sweep_interval=args.sweep_interval,
        republish_after=args.republish_after,
        seed=args.seed,
        keep=args.keep,
    )


def _quiet_tracker_logs() -> None:
    """The tracker's own lines (the publisher's, here) to stderr, warnings only: stdout is
    the summary's."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


async def _run_until_signalled(soak: Soak) -> SoakReport:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, soak.interrupt)
    return await soak.run()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    _quiet_tracker_logs()
    soak = Soak(config)
    try:
        asyncio.run(_run_until_signalled(soak))
    except SoakError as error:
        print(f"soak: {error}", file=sys.stderr)
    print(soak.report.explain(), flush=True)
    return 130 if soak.interrupted else 0 if soak.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
