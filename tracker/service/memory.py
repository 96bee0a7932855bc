"""The cyclic garbage collector in a long-running service.

Python's collector passes over every object of the process in its full passes: the modules,
settings and app that start-up made, which live as long as the process, as much as what each
delivery makes. Measured on a busy worker (docs/benchmarks.md) those passes took 50 ms each,
a tenth of its CPU, and set its p99 latency. ``freeze_startup_objects`` moves what exists
once the service has started out of the collector's sight (``gc.freeze``), once per process:
later passes scan only what was made since.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_objects() -> bool:
    """Collect once, then freeze what is left; only the first call in a process does
    anything (a second service in the process would freeze the first one's garbage).
    Whether this call froze."""
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    return True
