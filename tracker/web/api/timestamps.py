"""The one form of every time the HTTP APIs write."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

from tracker.clock import iso_utc

# UTC to the millisecond (as stored), one width, so clients can sort times as text; pydantic's
# own format drops a zero fraction. Read as any ISO 8601 time.
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
