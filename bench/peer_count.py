"""Inside a peer's worker process: count the distinct no-op tasks and, at the expected count, write
the wall time from the first task's start to the last one's end and this process's CPU over
it (``time.process_time()``: all its threads) as JSON to ``BENCH_PEER_RESULT``."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class Completion:
    def __init__(self, expected: int, result: Path | None) -> None:
        self.expected = expected
        self.result = result
        self.seen: set[int] = set()
        self.duplicates = 0
        self.first: tuple[float, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Completion:
        result = os.environ.get("BENCH_PEER_RESULT")
        expected = int(os.environ.get("BENCH_PEER_EXPECTED", "0"))
        return cls(expected, Path(result) if result else None)

    def started(self) -> None:
        if self.first is None:
            with self._lock:
                if self.first is None:
                    self.first = (time.monotonic(), time.process_time())

    def finished(self, n: int) -> None:
        """Task ``n`` ended; a redelivered one (its ack lost) is counted apart."""
        with self._lock:
            if n in self.seen:
                self.duplicates += 1
                return
            self.seen.add(n)
            last = len(self.seen) == self.expected
        if last and self.result is not None and self.first is not None:
            seconds = time.monotonic() - self.first[0]
            cpu = time.process_time() - self.first[1]
            data = {
                "messages": self.expected,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "duplicates": self.duplicates,
            }
            partial = self.result.with_suffix(".tmp")
            partial.write_text(json.dumps(data))
            partial.rename(self.result)
