"""A model's figures day by day: the median and p90 of its decode speed (tokens/s) and time to
first token, how often it was loaded and how long a load took, with the changes
(:mod:`app.usage.changes`) that happened meanwhile — "did this model get slower after I
updated?".

Speeds and TTFT are those of the successful requests llmmon measured (proxy, prompt tests,
benchmarks), the server's own figure where it gave one. Loads are the ``model_loaded`` events
of the collectors; the load time is the median ``load_s`` the server reported on requests that
waited for a load (more than :data:`LOAD_MIN_S`; Ollama reports a few milliseconds on every
request to a model already in memory). Days are local days.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from app.usage.changes import ChangeMarker, change_markers
from app.usage.periods import local_midnight

LOAD_MIN_S = 0.1
OK = "error_type = '' AND status BETWEEN 200 AND 399"


@dataclass(frozen=True, slots=True)
class TrendDay:
    start: float                  # local midnight
    requests: int                 # successful requests measured
    speed_median: float | None    # tokens/s
    speed_p90: float | None
    ttft_median: float | None     # seconds
    ttft_p90: float | None
    loads: int
    load_median_s: float | None


@dataclass(frozen=True)
class ModelTrend:
    model: str
    servers: list[str]
    days: list[TrendDay]
    changes: list[ChangeMarker]


def day_starts(t0: float, t1: float) -> np.ndarray:
    """Local midnights from the day holding ``t0`` to the one after ``t1`` (edges of the days)."""
    starts = [local_midnight(t0)]
    while starts[-1] <= t1:
        starts.append(local_midnight(starts[-1] + 36 * 3600))  # +1.5 d then back to midnight: DST-proof
    return np.array(starts)


def trend_models(conn: sqlite3.Connection, t0: float, t1: float) -> list[str]:
    """Models with successful measured requests in ``[t0, t1]``, most used first."""
    return [r[0] for r in conn.execute(
        f"SELECT model, count(*) AS n FROM requests WHERE ts_start BETWEEN ? AND ? AND model != '' AND {OK} "
        "GROUP BY model ORDER BY n DESC, model", (t0, t1))]


def _quantiles(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    median, p90 = np.percentile(values, [50, 90])
    return float(median), float(p90)


def model_trend(conn: sqlite3.Connection, model: str, t0: float, t1: float) -> ModelTrend:
    rows = conn.execute(
        "SELECT ts_start, COALESCE(server_tokens_per_s, client_tokens_per_s), ttft_s, load_s, server "
        f"FROM requests WHERE model=? AND ts_start BETWEEN ? AND ? AND {OK}", (model, t0, t1)).fetchall()
    edges = day_starts(t0, t1)
    servers = sorted({r[4] for r in rows})
    data = np.array([r[:4] for r in rows], dtype=np.float64).reshape(-1, 4)
    day = np.searchsorted(edges, data[:, 0], side="right") - 1
    loads = np.zeros(len(edges), dtype=int)
    loaded = conn.execute("SELECT ts, labels FROM events WHERE kind='model_loaded' AND ts BETWEEN ? AND ?", (t0, t1))
    for ts, labels_text in loaded:
        if json.loads(labels_text or "{}").get("model") == model:
            loads[int(np.searchsorted(edges, ts, side="right")) - 1] += 1
    days = []
    for i, start in enumerate(edges[:-1]):
        mine = data[day == i]
        speed = _quantiles(mine[:, 1])
        ttft = _quantiles(mine[:, 2])
        load_s = mine[:, 3][mine[:, 3] > LOAD_MIN_S]
        days.append(TrendDay(float(start), len(mine), *speed, *ttft, int(loads[i]),
                             float(np.median(load_s)) if len(load_s) else None))
    return ModelTrend(model, servers, days, change_markers(conn, t0, t1, model, servers or None))
