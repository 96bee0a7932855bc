"""``python -m tests.mongo_standin --port 0``: serve until killed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc

from tests.mongo_standin.server import StandInServer, serve


def main() -> None:
    parser = argparse.ArgumentParser(description="A MongoDB wire-protocol stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017, help="0 picks a free port")
    args = parser.parse_args()
    # Tens of thousands of stored documents make every full collection slow; stored
    # documents hold no cycles, so collecting rarely costs nothing.
    gc.set_threshold(100_000, 50, 100)

    def announce(server: StandInServer) -> None:
        print(f"listening {server.host}:{server.port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, on_listening=announce))


if __name__ == "__main__":
    main()
