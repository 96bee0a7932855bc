"""The tracker's clock: every timestamp is UTC, in whole milliseconds, as BSON stores it."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.clock import as_utc, aware, iso_utc, random_uuid, utcnow

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


# A day inside datetime's range either side, so that any zone's time has a UTC one.
ANY_TIME = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))
ANY_ZONED_TIME = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.timezones())


@given(ANY_ZONED_TIME | ANY_TIME, ANY_ZONED_TIME | ANY_TIME)
def test_a_written_time_is_its_utc_millisecond_and_sorts_as_text(
    first: datetime, second: datetime
) -> None:
    # Given: any two times, aware in any zone or naive (MongoDB's UTC)
    # When
    texts = iso_utc(first), iso_utc(second)

    # Then: one width, read back as the UTC millisecond, and ordered as the times are
    def millisecond(value: datetime) -> datetime:
        at = as_utc(value)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in texts)
    assert datetime.fromisoformat(texts[0]) == millisecond(first)
    assert (texts[0] < texts[1]) == (millisecond(first) < millisecond(second))


def test_a_time_at_a_whole_second_keeps_its_fraction() -> None:
    # pydantic and isoformat() leave out a zero fraction, which sorts after any other
    whole = datetime(2026, 11, 29, 22, 9, 29, tzinfo=UTC)
    assert iso_utc(whole) == "2026-11-29T22:09:29.000Z"
    assert iso_utc(whole) < iso_utc(whole + timedelta(milliseconds=61))
    assert iso_utc(datetime(999, 1, 2, 3, 4, 5, 6000)) == "0999-01-02T03:04:05.006Z"


@given(st.binary(min_size=16, max_size=16))
def test_a_random_uuid_reads_as_uuid4_would_write_it(random: bytes) -> None:
    # Given: any 16 random bytes
    with mock.patch("os.urandom", lambda size: random[:size]):
        # When
        text = random_uuid()
    # Then: the text is canonical, and that of the version 4 UUID made of those bytes
    assert text == str(uuid.UUID(bytes=random, version=4))
    assert uuid.UUID(text).version == 4
    assert uuid.UUID(text).variant == uuid.RFC_4122


def test_random_uuids_do_not_repeat() -> None:
    # Given / When
    made = [random_uuid() for _ in range(10_000)]
    # Then
    assert len(set(made)) == len(made)
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", u)
        for u in made
    )


@given(st.datetimes(timezones=st.none() | st.timezones()))
def test_aware_keeps_an_aware_time_and_reads_a_naive_one_as_utc(value: datetime) -> None:
    # When
    made = aware(value)
    # Then
    assert made.tzinfo is not None
    assert made.timestamp() == as_utc(value).timestamp()
    if value.tzinfo is not None:
        assert made is value
