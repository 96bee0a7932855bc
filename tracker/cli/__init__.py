"""The ``tracker`` command: inspect tasks, operate the dead-letter queue, run the service.
Each command's module is imported when the command runs (``app.COMMANDS``)."""

from __future__ import annotations

from tracker.cli.app import main

__all__ = ["main"]
