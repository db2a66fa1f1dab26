"""A model's figures day by day: the median and p90 of its decode speed (tokens/s) and time to
first token, how often it was loaded and how long a load took, with the changes
(:mod:`app.usage.changes`) that happened meanwhile — "did this model get slower after I
updated?".

Speeds and TTFT are those of the successful requests llmmon measured (proxy, prompt tests,
benchmarks), the server's own figure where it gave one. Loads are the ``model_loaded`` events
of the collectors; the load time is the median ``load_s`` the server reported on requests that
waited for a load (more than :data:`LOAD_MIN_S`; Ollama reports a few milliseconds on every
request to a model already in memory). Days are local days.

Complete days are computed once, on the store's writer as the usage rollup passes each local
midnight, and kept in ``usage_trend_day`` (per day and model): a model's month then reads 30
rows instead of the hundreds of thousands of requests behind them. Today, and days kept in
another time zone, are computed when asked.
"""
from __future__ import annotations

import itertools
import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import astuple, dataclass

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


DAY_COLUMNS = ("day_start", "requests", "speed_median", "speed_p90", "ttft_median", "ttft_p90", "loads",
               "load_median_s")


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


def compute_days(conn: sqlite3.Connection, edges: Sequence[float] | np.ndarray,
                 model: str | None = None) -> dict[tuple[float, str], tuple[TrendDay, list[str]]]:
    """``(day start, model) → (its day, the servers it ran on)`` for the days between consecutive
    ``edges`` (local midnights), of one model or of every model that had requests then."""
    t0, t1 = float(edges[0]), float(edges[-1])
    where, params = ("model=? AND ", [model]) if model is not None else ("", [])
    rows = conn.execute(
        "SELECT ts_start, COALESCE(server_tokens_per_s, client_tokens_per_s), ttft_s, load_s, model, server "
        f"FROM requests WHERE {where}ts_start>=? AND ts_start<? AND {OK} ORDER BY model, ts_start",
        (*params, t0, t1)).fetchall()
    edges_array = np.asarray(edges, dtype=np.float64)
    loads: dict[tuple[float, str], int] = defaultdict(int)
    for ts, labels_text in conn.execute(
            "SELECT ts, labels FROM events WHERE kind='model_loaded' AND ts>=? AND ts<?", (t0, t1)):
        name = json.loads(labels_text or "{}").get("model", "")
        if model is None or name == model:
            loads[(float(edges_array[np.searchsorted(edges_array, ts, side="right") - 1]), name)] += 1
    data = np.array([r[:4] for r in rows], dtype=np.float64).reshape(-1, 4)
    # rows come grouped by model and in time order: each model's days are consecutive slices
    model_starts = [i for i in range(len(rows)) if i == 0 or rows[i][4] != rows[i - 1][4]]
    out: dict[tuple[float, str], tuple[TrendDay, list[str]]] = {}
    for first, last in itertools.pairwise([*model_starts, len(rows)]):
        name = rows[first][4]
        cuts = first + np.searchsorted(data[first:last, 0], edges_array)
        for i, (a, b) in enumerate(itertools.pairwise(cuts.tolist())):
            if a == b and (float(edges_array[i]), name) not in loads:
                continue
            chosen = data[a:b]
            load_s = chosen[:, 3][chosen[:, 3] > LOAD_MIN_S]
            start = float(edges_array[i])
            out[(start, name)] = (TrendDay(
                start, len(chosen), *_quantiles(chosen[:, 1]), *_quantiles(chosen[:, 2]), loads.get((start, name), 0),
                float(np.median(load_s)) if len(load_s) else None), sorted({r[5] for r in rows[a:b]}))
    for (start, name), count in loads.items():  # loaded, but no request measured that day
        if (start, name) not in out:
            out[(start, name)] = (TrendDay(start, 0, None, None, None, None, count, None), [])
    return out


# ----------------------------------------------------------------------------- kept per day
def store_days(conn: sqlite3.Connection, edges: Sequence[float]) -> None:
    """Compute the days between ``edges`` for every model and keep them (on the writer)."""
    days = compute_days(conn, edges)
    conn.execute("DELETE FROM usage_trend_day WHERE day_start>=? AND day_start<?", (edges[0], edges[-1]))
    ends = dict(itertools.pairwise(float(e) for e in edges))
    conn.executemany(
        f"INSERT INTO usage_trend_day (day_end, model, servers, {', '.join(DAY_COLUMNS)}) "
        f"VALUES (?, ?, ?, {', '.join('?' * len(DAY_COLUMNS))})",
        [(ends[start], name, json.dumps(servers), *astuple(d)) for (start, name), (d, servers) in days.items()])


def _kept_days(conn: sqlite3.Connection, model: str, edges: np.ndarray) -> dict[float, tuple[TrendDay, list[str]]]:
    """The kept days of ``model`` whose span is exactly one of today's local days (a database
    kept in another time zone keeps other spans: those days are computed again)."""
    wanted = dict(itertools.pairwise(edges.tolist()))
    try:
        rows = conn.execute(f"SELECT day_end, servers, {', '.join(DAY_COLUMNS)} FROM usage_trend_day "
                            "WHERE model=? AND day_start>=? AND day_start<?", (model, edges[0], edges[-1])).fetchall()
    except sqlite3.OperationalError:  # a database from before the usage tables
        return {}
    return {r[2]: (TrendDay(*r[2:]), json.loads(r[1])) for r in rows if wanted.get(r[2]) == r[0]}


def model_trend(conn: sqlite3.Connection, model: str, t0: float, t1: float) -> ModelTrend:
    """The model's whole local days from the one holding ``t0`` to the one holding ``t1``:
    complete days as the rollup kept them, the others computed now."""
    edges = day_starts(t0, t1)
    kept = _kept_days(conn, model, edges)
    missing = [i for i, start in enumerate(edges[:-1]) if float(start) not in kept]
    computed: dict[float, tuple[TrendDay, list[str]]] = {}
    for first, last in _runs(missing):  # consecutive missing days in one query each
        for (start, _name), value in compute_days(conn, edges[first:last + 2], model).items():
            computed[start] = value
    days, servers = [], set()
    for start in edges[:-1].tolist():
        day, on = kept.get(start) or computed.get(start) or (TrendDay(start, 0, None, None, None, None, 0, None), [])
        days.append(day)
        servers.update(on)
    return ModelTrend(model, sorted(servers), days, change_markers(conn, t0, t1, model, sorted(servers) or None))


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7]`` → ``[(1, 3), (7, 7)]``."""
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
