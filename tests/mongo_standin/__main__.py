"""``python -m tests.mongo_standin --port 0``: serve until killed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
from collections.abc import Callable

from tests.mongo_standin.server import StandInServer, serve


def main() -> None:
    parser = argparse.ArgumentParser(description="A MongoDB wire-protocol stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017, help="0 picks a free port")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: uvloop when installed (auto), or asyncio's own",
    )
    args = parser.parse_args()
    # Tens of thousands of stored documents make every full collection slow; stored
    # documents hold no cycles, so collecting rarely costs nothing.
    gc.set_threshold(100_000, 50, 100)

    def announce(server: StandInServer) -> None:
        print(f"listening {server.host}:{server.port}", flush=True)

    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner,
    ):
        runner.run(serve(args.host, args.port, on_listening=announce))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for or, for ``auto``, installed: the stand-in's socket work
    (reads, writes, callbacks) then runs in C. None is asyncio's own loop."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


if __name__ == "__main__":
    main()
