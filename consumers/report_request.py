"""What a client asks the report service for: search parameters and a format, checked once
for every way in (HTTP, Python, a message on the queue), and the report id they hash to.

The parameters are a closed set: a key the search does not know is refused rather than
ignored, so a typo is an error and two requests that ask for the same rows share one id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import tracker
from tracker.validation import printable

QUEUE: Final = "reports"
# Identical requests within this many seconds share one report.
DEDUPE_WINDOW: Final = 60.0
FORMATS: Final = ("csv", "pdf", "txt")
COLUMNS: Final = ("order_id", "region", "product", "quantity", "amount")
REGIONS: Final = ("north", "south", "east", "west")
PRODUCTS: Final = ("anvil", "rocket", "magnet", "spring", "glue")
SIMULATIONS: Final = ("flaky", "partner_down", "slow")
DEFAULT_ROWS: Final = 1000
# A PDF is laid out in Python, about 0.65 ms a row: 100,000 rows took 66 s here (64 s to
# render 200 parts, 2 s to merge them) into 2,000 pages and 6.3 MB, well inside the 300 s
# timeout. CSV and text are written at disk speed.
MAX_ROWS: Final = {"csv": 1_000_000, "txt": 1_000_000, "pdf": 100_000}
MAX_SEED: Final = 2**31 - 1
MAX_SLOW_SECONDS: Final = 3600
REPORT_ID: Final = re.compile(rf"{QUEUE}:[0-9a-f]{{16}}")
_FIELDS: Final = ("params", "format")
_PARAMS: Final = ("region", "rows", "seed", "simulate", "seconds")


def report_id(params: Mapping[str, Any], fmt: str) -> str:
    """The report's id (its taskId): a hash of the canonical parameters and format."""
    canonical = json.dumps({"params": params, "format": fmt}, sort_keys=True, separators=(",", ":"))
    return f"{QUEUE}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def is_report_id(value: str) -> bool:
    return REPORT_ID.fullmatch(value) is not None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(params: Mapping[str, Any], fmt: str) -> str | None:
    """Why ``params`` cannot be searched in ``fmt``, or None."""
    for key in params:
        if key not in _PARAMS:
            shown = printable(str(key), 40)
            return f"unknown parameter {shown!r} (known: {', '.join(_PARAMS)})"
    rows = params.get("rows", DEFAULT_ROWS)
    if not _is_int(rows) or not 0 <= rows <= MAX_ROWS[fmt]:
        return f"params.rows must be an integer from 0 to {MAX_ROWS[fmt]} for {fmt}"
    region = params.get("region")
    if region is not None and region not in REGIONS:
        return f"params.region must be one of {', '.join(REGIONS)}"
    seed = params.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        return f"params.seed must be an integer from 0 to {MAX_SEED}"
    simulate = params.get("simulate")
    if simulate is not None and simulate not in SIMULATIONS:
        return f"params.simulate must be one of {', '.join(SIMULATIONS)}"
    seconds = params.get("seconds", 0)
    number = _is_int(seconds) or isinstance(seconds, float)
    if not number or not 0 <= seconds <= MAX_SLOW_SECONDS:  # NaN compares false
        return f"params.seconds must be a number from 0 to {MAX_SLOW_SECONDS}"
    return None


@dataclass(frozen=True)
class Request:
    """A checked request: ``params`` (see ``_PARAMS``) and ``fmt``, one of ``FORMATS``."""

    params: dict[str, Any]
    fmt: str

    @classmethod
    def parse(cls, payload: Any) -> Request:
        """The request in ``payload`` (``{"params": {...}, "format": ...}``, format ``csv``
        when left out); ``tracker.ValidationError`` saying what is wrong otherwise."""
        if not isinstance(payload, dict) or not isinstance(payload.get("params"), dict):
            raise tracker.ValidationError("a report request needs an object 'params'")
        for key in payload:
            if key not in _FIELDS:
                shown = printable(str(key), 40)
                raise tracker.ValidationError(
                    f"unknown field {shown!r} (a request has {' and '.join(_FIELDS)})"
                )
        fmt = payload.get("format", "csv")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            shown = printable(str(fmt), 40)
            raise tracker.ValidationError(
                f"format {shown!r} is not supported (supported: {', '.join(FORMATS)})"
            )
        problem = _problem(payload["params"], fmt)
        if problem is not None:
            raise tracker.ValidationError(problem)
        return cls(params=payload["params"], fmt=fmt)

    @property
    def rows(self) -> int:
        rows: int = self.params.get("rows", DEFAULT_ROWS)
        return rows

    @property
    def id(self) -> str:
        return report_id(self.params, self.fmt)


class Enqueues(Protocol):
    """``tracker.Publisher``, or the service's own ``Enqueuer`` (the HTTP routes use it)."""

    async def enqueue(
        self,
        queue: str,
        payload: Any,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_retries: int | None = None,
        *,
        dedupe_window: float | None = None,
    ) -> tracker.EnqueueResult: ...


async def submit(
    publisher: Enqueues, params: dict[str, Any], fmt: str = "csv", queue: str = QUEUE
) -> tracker.EnqueueResult:
    """Request a report; returns at once. A request identical to one running, queued or
    completed within ``DEDUPE_WINDOW`` seconds returns that report instead. A request that is
    not valid raises ``tracker.ValidationError`` and enqueues nothing."""
    request = Request.parse({"params": params, "format": fmt})
    return await publisher.enqueue(
        queue,
        {"params": request.params, "format": request.fmt},
        task_id=request.id,
        metadata={"format": request.fmt, "region": request.params.get("region")},
        dedupe_window=DEDUPE_WINDOW,
    )
