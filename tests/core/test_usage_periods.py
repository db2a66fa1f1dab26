"""``--since`` and the local periods: in several time zones (one with daylight saving, one a
quarter hour off UTC), calendar ranges start at local midnight N-1 days back, rolling ones N
hours or minutes back, and any text is a start time or a ValueError naming the accepted forms."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.usage.periods import SINCE_HELP, parse_since, period_start
from tests.support.timezones import local_time_zone

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]  # Lord Howe: 30-min DST
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31))


@settings(max_examples=60, deadline=None)
@given(moments, st.integers(1, 400), st.sampled_from(["d", "w"]), st.sampled_from(ZONES))
def test_calendar_ranges_start_at_local_midnight(moment: datetime, count: int, unit: str, zone: str) -> None:
    with local_time_zone(zone):
        now = moment.timestamp()
        start = datetime.fromtimestamp(parse_since(f"{count}{unit}", now))
        days = count * (7 if unit == "w" else 1)
        assert start.time() == datetime.min.time()
        assert start.date() == datetime.fromtimestamp(now).date() - timedelta(days=days - 1)


@settings(max_examples=60, deadline=None)
@given(moments, st.integers(1, 10_000), st.sampled_from(["h", "m"]))
def test_rolling_ranges_go_back_exactly(moment: datetime, count: int, unit: str) -> None:
    now = moment.timestamp()
    assert now - parse_since(f"{count}{unit}", now) == count * (3600 if unit == "h" else 60)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_start_or_a_clear_error(text: str) -> None:
    try:
        start = parse_since(text, 1.7e9)
    except ValueError as exc:
        assert "--since" in str(exc)
    else:
        assert isinstance(start, float)


def test_words_dates_and_what_is_refused() -> None:
    with local_time_zone("Asia/Kathmandu"):
        now = datetime(2024, 5, 3, 15, 30).timestamp()
        assert parse_since("today", now) == datetime(2024, 5, 3).timestamp()
        assert parse_since("all", now) == 0.0
        assert parse_since("2024-05-01", now) == datetime(2024, 5, 1).timestamp()
        assert parse_since("2024-05-01T12:00+00:00", now) == 1714564800.0
        for bad in ("0d", "7 days", "yesterday", "-3h", "999999d"):
            with pytest.raises(ValueError, match="--since"):
                parse_since(bad, now)
        assert "7d" in SINCE_HELP


@pytest.mark.parametrize("zone", ZONES)
def test_periods_start_at_local_boundaries(zone: str) -> None:
    with local_time_zone(zone):
        moment = datetime(2024, 11, 3, 13, 47).timestamp()  # a Sunday; US clocks went back that night
        assert datetime.fromtimestamp(period_start(moment, "hour")) == datetime(2024, 11, 3, 13, 0)
        assert datetime.fromtimestamp(period_start(moment, "day")) == datetime(2024, 11, 3)
        assert datetime.fromtimestamp(period_start(moment, "week")) == datetime(2024, 10, 28)
