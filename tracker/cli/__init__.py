"""The ``tracker`` command: inspect tasks, and triage, retry and archive dead letters."""

from __future__ import annotations

from tracker.cli.app import main

__all__ = ["main"]
