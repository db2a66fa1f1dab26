"""Durations as users write and read them: ``30s``, ``5m``, ``1h30m``, ``250ms``.

Two spellings, each used everywhere it fits: the exact one of the alert rule files and the rule
editor (:func:`format_duration`, read back by :func:`parse_duration`), and the spoken one of
alert sentences and the GUI's tables (:func:`spoken_duration`).
"""
from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 366 * 86400.0   # windows, for, cooldown, absent_for: a year is plenty


def parse_duration(value: object) -> float:
    """Seconds from a number or a text like ``"30s"``, ``"5m"``, ``"1h30m"``, at most
    :data:`MAX_DURATION_S`; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        seconds: float = value
    elif isinstance(value, str) and (text := value.strip().lower()) and _DURATION_PART.sub("", text).strip() == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise ValueError(f"{brief(value)} is not a duration (use e.g. 30s, 5m, 1h)")
    # Compared before float(): a 400-digit number of seconds is out of range, not an overflow.
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"a duration must be from 0s to {format_duration(MAX_DURATION_S)}, not {brief(value)}")
    return float(seconds)


def brief(value: object) -> str:
    """A value as an error message quotes it: its repr, cut at 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def format_duration(seconds: float) -> str:
    """The shortest exact text for a duration, what :func:`parse_duration` reads back (rule
    files, the rule editor): ``90 → "1m30s"``, ``3600 → "1h"``, ``0.25 → "250ms"``."""
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:g}ms"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def spoken_duration(seconds: float) -> str:
    """A duration as people read it, at most two units, the smaller ones dropped (alert
    sentences, tables): ``"30 s"``, ``"2 min"``, ``"2 min 30 s"``, ``"1 h 5 min"``, ``"3 d 2 h"``.

    >>> spoken_duration(45), spoken_duration(150), spoken_duration(3900)
    ('45 s', '2 min 30 s', '1 h 5 min')
    """
    rest = max(0, int(round(seconds)))
    for big, small, big_name, small_name in ((86400, 3600, "d", "h"), (3600, 60, "h", "min"),
                                             (60, 1, "min", "s")):
        if rest >= big:
            whole, part = divmod(rest, big)
            part //= small
            return f"{whole} {big_name}" + (f" {part} {small_name}" if part else "")
    return f"{rest} s"
