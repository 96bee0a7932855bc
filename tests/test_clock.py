"""The tracker's clock: every timestamp is UTC, in whole milliseconds, as BSON stores it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.clock import utcnow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# From the epoch to the last millisecond of year 9999, the end of datetime's range.
LAST_NANOSECOND = (
    int(
        (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH)
        // timedelta(microseconds=1)
    )
    * 1000
    + 999_999
)


@given(st.integers(min_value=0, max_value=LAST_NANOSECOND))
def test_now_is_the_clocks_millisecond_exactly(nanoseconds: int) -> None:
    # Given: the system clock at any nanosecond datetime can show
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time_ns", lambda: nanoseconds)

        # When
        now = utcnow()

    # Then: its millisecond, not a microsecond off, and unchanged through BSON
    assert now == EPOCH + timedelta(milliseconds=nanoseconds // 1_000_000)
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0
    stored = bson.decode(bson.encode({"t": now}), codec_options=bson.CodecOptions(tz_aware=True))
    assert stored["t"] == now


def test_now_follows_the_real_clock() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    now = utcnow()
    assert before <= now <= datetime.now(UTC)
