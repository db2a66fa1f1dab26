"""Durations are written one way everywhere: exact texts read back to the same seconds, and
shortened texts for tables never claim more time than there is."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.durations import MAX_DURATION_S, format_duration, parse_duration


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=int(MAX_DURATION_S)))
def test_exact_texts_read_back_to_the_same_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1.0, max_value=MAX_DURATION_S), st.integers(min_value=1, max_value=3))
def test_shortened_texts_have_at_most_that_many_units_and_round_down(seconds: float, parts: int) -> None:
    text = format_duration(seconds, parts=parts)
    assert 1 <= len(re.findall(r"\d+[dhms]", text)) <= parts
    shown = parse_duration(text)
    assert shown <= round(seconds)
    biggest = next(size for size in (86400, 3600, 60, 1) if round(seconds) >= size)
    assert round(seconds) - shown < biggest  # only smaller units than the first one are dropped


def test_examples() -> None:
    assert [format_duration(s, parts=2) for s in (0, 59, 3605, 5400, 90061)] == ["0s", "59s", "1h", "1h30m", "1d1h"]
