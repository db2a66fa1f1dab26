"""Durations are written two ways, each one way everywhere: exact texts (rule files) read back to
the same seconds, and spoken texts (sentences, tables) never claim more time than there is."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.durations import MAX_DURATION_S, format_duration, parse_duration, spoken_duration

SPOKEN_UNITS = {"d": 86400, "h": 3600, "min": 60, "s": 1}
NEXT_SMALLER = {"d": 3600, "h": 60, "min": 1, "s": 1}


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=int(MAX_DURATION_S)))
def test_exact_texts_read_back_to_the_same_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=MAX_DURATION_S))
def test_spoken_texts_have_two_units_at_most_and_round_down(seconds: float) -> None:
    parts = re.findall(r"(\d+) (d|h|min|s)\b", spoken_duration(seconds))
    assert 1 <= len(parts) <= 2
    said = sum(int(n) * SPOKEN_UNITS[u] for n, u in parts)
    # only what is smaller than the unit after the first one is left out ("1 h" of 3605 s: 5 s)
    assert 0 <= round(seconds) - said < NEXT_SMALLER[parts[0][1]]


def test_examples() -> None:
    assert [spoken_duration(s) for s in (0, 59, 3605, 5400, 90061)] == ["0 s", "59 s", "1 h", "1 h 30 min", "1 d 1 h"]
