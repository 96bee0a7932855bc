"""What every phase sends: 100-byte JSON bodies, and the lanes that keep C calls in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

BODY_BYTES = 100


def _encoded(payload: dict[str, str]) -> bytes:
    # The tracker's own encoding: compact separators (tracker.delivery.envelope).
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def payload(i: int) -> dict[str, str]:
    """The payload of message ``i``: its JSON encoding is exactly ``BODY_BYTES`` long."""
    number = f"{i:010d}"
    pad = BODY_BYTES - len(_encoded({"n": number, "pad": ""}))
    return {"n": number, "pad": "x" * pad}


def body(i: int) -> bytes:
    return _encoded(payload(i))


async def run_limited(count: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> None:
    """``call(0) … call(count - 1)``, at most ``concurrency`` awaiting at once: that many
    lanes, each taking the next index as soon as its previous call returned."""
    indices = iter(range(count))

    async def lane() -> None:
        for i in indices:  # shared: each lane takes the next index
            await call(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
