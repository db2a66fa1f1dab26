"""The speed regression figure the alert rule ``model_slower_than_last_week`` watches:
``llm_model_speed_ratio{server,model}`` = the model's median decode speed (tokens/s) today,
divided by its median over the 7 local days before today, from the requests table.

It exists only when today has at least :data:`MIN_TODAY` and the week before at least
:data:`MIN_WEEK` successful requests with a speed, so a model used twice is not "30 % slower".
The week's medians change once a day and are cached until midnight.

>>> import time; now = time.time()
>>> speed_ratio_samples([("s", "m", 40.0)] * 5, {("s", "m"): (50.0, 20)}, now)[0].value
0.8
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from app.records import Sample, labels_of
from app.usage.periods import local_midnight
from app.usage.trends import OK

METRIC = "llm_model_speed_ratio"
MIN_TODAY = 5
MIN_WEEK = 20
_SPEED = "COALESCE(server_tokens_per_s, client_tokens_per_s)"


def _medians(rows: Iterable[tuple[str, str, float]]) -> dict[tuple[str, str], tuple[float, int]]:
    speeds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for server, model, speed in rows:
        speeds[(server, model)].append(speed)
    return {k: (float(np.median(v)), len(v)) for k, v in speeds.items()}


def week_medians(conn: sqlite3.Connection, today: float) -> dict[tuple[str, str], tuple[float, int]]:
    """``(server, model) → (median tokens/s, requests)`` over the 7 local days before ``today``."""
    rows = conn.execute(f"SELECT server, model, {_SPEED} FROM requests WHERE ts_start>=? AND ts_start<? "
                        f"AND {OK} AND {_SPEED} IS NOT NULL", (local_midnight(today, 7), today)).fetchall()
    return _medians(rows)


def speed_ratio_samples(today_rows: list[tuple[str, str, float]], week: dict[tuple[str, str], tuple[float, int]],
                        now: float) -> list[Sample]:
    out = []
    for (server, model), (median, count) in sorted(_medians(today_rows).items()):
        base = week.get((server, model))
        if count >= MIN_TODAY and base is not None and base[1] >= MIN_WEEK and base[0] > 0:
            out.append(Sample(METRIC, median / base[0], now, labels_of(server=server, model=model)))
    return out


class SpeedRatios:
    """Computes the samples from a connection, keeping the week's medians for the day."""

    def __init__(self) -> None:
        self._week: tuple[float, dict[tuple[str, str], tuple[float, int]]] | None = None

    def samples(self, conn: sqlite3.Connection, now: float) -> list[Sample]:
        today = local_midnight(now)
        if self._week is None or self._week[0] != today:
            self._week = (today, week_medians(conn, today))
        rows = conn.execute(f"SELECT server, model, {_SPEED} FROM requests WHERE ts_start>=? AND {OK} "
                            f"AND {_SPEED} IS NOT NULL", (today,)).fetchall()
        return speed_ratio_samples(rows, self._week[1], now)
