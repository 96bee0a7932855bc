"""The ``tracker`` command: inspect tasks, operate the dead-letter queue, run the service."""

from __future__ import annotations

from tracker.cli import dlq, serve, tasks
from tracker.cli.app import main

main.add_command(tasks.status)
main.add_command(tasks.stats)
main.add_command(tasks.stuck)
main.add_command(dlq.dlq)
main.add_command(serve.serve)

__all__ = ["main"]
