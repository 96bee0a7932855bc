"""CPU time and wall time at the edges of a measured window, for this process (the consumer
or publisher) and for the other processes the run depends on (read from /proc)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (its threads included), None when it
    cannot be read. Resolution: one clock tick (10 ms)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of the machine spent busy since boot (user, nice, system, irq,
    softirq), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in first[1:8])
    return (user + nice + system + irq + softirq) / _TICKS


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def find_listener(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` on this machine (the broker serving
    the benchmark, not another node a test suite started), None when it cannot be told."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not sockets:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in sockets:
                    return int(entry.name)
        except OSError:
            continue
    return None


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    others: dict[str, float] = field(default_factory=dict)
    machine: float | None = None


@dataclass(frozen=True)
class Window:
    """Between two samples: wall seconds, this process's CPU seconds, each other process's
    CPU seconds (absent when it could not be read), and the whole machine's busy CPU
    seconds."""

    seconds: float
    cpu: float
    others: dict[str, float] = field(default_factory=dict)
    machine: float | None = None

    @classmethod
    def between(cls, start: Sample, end: Sample) -> Window:
        others = {
            name: end.others[name] - start.others[name]
            for name in start.others
            if name in end.others
        }
        machine = (
            None if start.machine is None or end.machine is None else end.machine - start.machine
        )
        return cls(end.wall - start.wall, end.cpu - start.cpu, others, machine)

    @property
    def foreign_load(self) -> float | None:
        """Cores used meanwhile by processes outside the benchmark (another test suite, …):
        the machine's busy time less this process's and the others'. 10 ms resolution."""
        if self.machine is None or self.seconds <= 0:
            return None
        ours = self.cpu + sum(self.others.values())
        return max(self.machine - ours, 0.0) / self.seconds


class Probe:
    """Reads a ``Sample``: ``time.perf_counter()``, ``time.process_time()`` (this process,
    all its threads) and the CPU seconds of the processes in ``others`` (name -> pid)."""

    def __init__(self, others: Mapping[str, int | None] | None = None) -> None:
        self.others = {name: pid for name, pid in (others or {}).items() if pid is not None}

    def read(self) -> Sample:
        wall, cpu = time.perf_counter(), time.process_time()
        others = {}
        for name, pid in self.others.items():
            seconds = process_cpu_seconds(pid)
            if seconds is not None:
                others[name] = seconds
        return Sample(wall, cpu, others, machine_busy_seconds())

    async def wait_for_quiet(self, limit: float = 0.25, longest: float = 90.0) -> Window:
        """Wait (at most ``longest`` seconds) until a one-second window in which processes
        outside the benchmark used less than ``limit`` of a core; that last window."""
        deadline = time.perf_counter() + longest
        while True:
            start = self.read()
            await asyncio.sleep(1.0)
            window = Window.between(start, self.read())
            load = window.foreign_load
            if load is None or load < limit or time.perf_counter() > deadline:
                return window
