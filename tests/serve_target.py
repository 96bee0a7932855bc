"""A consumer module for the `tracker serve` test; its queue comes from the environment."""

from __future__ import annotations

import os

import tracker

QUEUE = os.environ.get("SERVE_TEST_QUEUE", "serve-test")


@tracker.tracked(QUEUE, max_retries=0)
async def echo(task: tracker.TaskContext) -> object:
    task.log.info("echo", payload=task.payload)
    return task.payload
