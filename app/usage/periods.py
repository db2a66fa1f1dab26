"""Time ranges and periods in the user's local time: "today", "7 d", "--since 30d", a local day
or ISO week, across daylight-saving changes (via ``datetime``'s local conversions).

``Nd`` and ``Nw`` are calendar ranges: today and the N-1 days (N weeks' days) before it, from
local midnight, so ``--by day`` never starts with a partial day. ``Nh`` and ``Nm`` are rolling:
the last N hours or minutes.

>>> import os, time; before = os.environ.get("TZ"); os.environ["TZ"] = "Europe/Berlin"; time.tzset()
>>> now = datetime(2024, 3, 31, 15, 0).timestamp()   # the day clocks went forward
>>> datetime.fromtimestamp(parse_since("2d", now)).isoformat()
'2024-03-30T00:00:00'
>>> (now - parse_since("3h", now)) / 3600
3.0
>>> (period_start(now, "day") - datetime(2024, 3, 31).timestamp(), period_start(now, "week") < now)
(0.0, True)
>>> _ = os.environ.pop("TZ") if before is None else os.environ.update(TZ=before); time.tzset()

"""
from __future__ import annotations

import re
from datetime import datetime, timedelta

GROUPS = ("hour", "day", "week")
PRESETS = ("today", "7d", "30d", "all")
_SPAN = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$", re.IGNORECASE)
SINCE_HELP = "7d, 30d, 2w (calendar days), 24h, 90m (rolling), today, all, or a date/time like 2024-05-01"


def local_midnight(ts: float, days_back: int = 0) -> float:
    """The start of the local day ``days_back`` days before the one holding ``ts``."""
    day = datetime.fromtimestamp(ts).date() - timedelta(days=days_back)
    return datetime(day.year, day.month, day.day).timestamp()


def period_start(ts: float, group: str) -> float:
    """The start of the local hour, day or ISO week (Monday) holding ``ts``."""
    moment = datetime.fromtimestamp(ts)
    if group == "hour":
        return moment.replace(minute=0, second=0, microsecond=0).timestamp()
    if group == "day":
        return local_midnight(ts)
    if group == "week":
        return local_midnight(ts, moment.weekday())
    raise ValueError(f"unknown grouping {group!r} (use {', '.join(GROUPS)})")


def parse_since(text: str, now: float) -> float:
    """The start of a range given as ``--since``; ``all`` gives 0 (from the first record).
    Raises ValueError with the accepted forms."""
    word = text.strip().lower()
    if word == "all":
        return 0.0
    if word == "today":
        return local_midnight(now)
    found = _SPAN.match(word)
    if found:
        count, unit = int(found.group(1)), found.group(2)
        if count < 1:
            raise ValueError(f"--since {text!r}: the number must be at least 1")
        if unit in "dw":
            days = count * (7 if unit == "w" else 1)
            if days > 36_500:
                raise ValueError(f"--since {text!r}: at most 100 years back")
            return local_midnight(now, days - 1)
        return now - count * (3600.0 if unit == "h" else 60.0)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not a range (use {SINCE_HELP})") from None
    try:
        return when.timestamp()  # a naive date or time is local
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"--since {text!r}: {exc}") from None


def preset_range(preset: str, now: float, first: float | None) -> tuple[float, float]:
    """``(t0, t1)`` of a preset (``today``, ``7d``, ``30d``, ``all``); ``first`` is when the
    database's history begins (``all`` starts there)."""
    start = parse_since(preset, now)
    if start == 0.0:
        start = first if first is not None else local_midnight(now)
    return start, now
