from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

import tracker
from tracker import db


@pytest.fixture
async def store() -> AsyncIterator[str]:
    """A connected, empty store: the in-memory MongoDB, or the real server named by
    TRACKER_MONGODB_URL (each test gets its own database, dropped afterwards)."""
    url = os.environ.get("TRACKER_MONGODB_URL") or None
    database = f"tracker_test_{uuid.uuid4().hex[:12]}"
    await tracker.connect(url, database)
    try:
        yield database
    finally:
        if db.is_connected():
            await db.collection().database.client.drop_database(database)
        await tracker.disconnect()


def in_memory() -> bool:
    return not os.environ.get("TRACKER_MONGODB_URL")
