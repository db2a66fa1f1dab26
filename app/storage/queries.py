"""Read-side queries on the store's file, for charts history, the session browser and export.

Every function takes a connection from :meth:`app.storage.store.Store.reader` (or any sqlite3
connection on the file) so it can run on whichever thread needs it.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from app.records import Labels, labels_json


@dataclass(frozen=True, slots=True)
class PromptTestRun:
    """One row of the prompt test's history: what ran and what it measured."""

    ts_start: float
    model: str
    ttft_s: float | None
    tokens_per_s: float | None       # the server's figure, else the client-observed one
    completion_tokens: int | None
    prompt: str | None


def series_id(conn: sqlite3.Connection, name: str, labels: Labels = ()) -> int | None:
    row = conn.execute("SELECT id FROM series WHERE name=? AND labels=?",
                       (name, labels_json(labels))).fetchone()
    return None if row is None else int(row[0])


def series_points(conn: sqlite3.Connection, sid: int, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """All ``(ts, value)`` of one series with ``t0 <= ts <= t1``, oldest first."""
    rows = conn.execute("SELECT ts, value FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? "
                        "ORDER BY ts", (sid, t0, t1)).fetchall()
    if not rows:
        return np.empty(0), np.empty(0)
    data = np.array(rows, dtype=np.float64)
    return data[:, 0], data[:, 1]


def series_buckets(conn: sqlite3.Connection, sid: int, t0: float, t1: float,
                   buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """One series over ``[t0, t1]`` reduced to at most ``2 * buckets`` points: the min and the max
    of each time bucket, so spikes survive however long the range (a chart needs no more points
    than it has pixels). Returns ``(ts, values)`` oldest first."""
    width = max((t1 - t0) / max(buckets, 1), 1e-9)
    rows = conn.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, MIN(value), MAX(value), MIN(ts), MAX(ts) "
        "FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? GROUP BY b ORDER BY b",
        (t0, width, sid, t0, t1)).fetchall()
    if not rows:
        return np.empty(0), np.empty(0)
    data = np.array(rows, dtype=np.float64)
    ts = np.empty(2 * len(data))
    values = np.empty(2 * len(data))
    ts[0::2], ts[1::2] = data[:, 3], data[:, 4]
    values[0::2], values[1::2] = data[:, 1], data[:, 2]
    return ts, values


def series_ids(conn: sqlite3.Connection, name: str) -> list[tuple[int, str]]:
    """``(id, labels JSON)`` of every series recorded under ``name``."""
    return [(int(r[0]), r[1]) for r in
            conn.execute("SELECT id, labels FROM series WHERE name=? ORDER BY labels", (name,))]


def session_range(conn: sqlite3.Connection, session_id: int) -> tuple[float, float | None] | None:
    """``(started, ended)`` of a session; ``ended`` is None while it is recording."""
    row = conn.execute("SELECT started, ended FROM sessions WHERE id=?", (session_id,)).fetchone()
    return None if row is None else (float(row[0]), None if row[1] is None else float(row[1]))


def request_models(conn: sqlite3.Connection, t0: float, t1: float) -> list[str]:
    """Models that served requests in ``[t0, t1]``, most used first."""
    return [r[0] for r in conn.execute(
        "SELECT model, count(*) AS n FROM requests WHERE ts_start BETWEEN ? AND ? AND model != '' "
        "GROUP BY model ORDER BY n DESC, model", (t0, t1))]


def model_requests(conn: sqlite3.Connection, model: str, t0: float, t1: float) -> np.ndarray:
    """Per request of ``model`` in ``[t0, t1]``: columns ts, tokens/s (server-reported, else
    client-observed), TTFT s, latency s, error (1/0). NaN where not measured."""
    rows = conn.execute(
        "SELECT ts_start, COALESCE(server_tokens_per_s, client_tokens_per_s), ttft_s, latency_s, "
        "CASE WHEN error_type != '' OR status >= 400 THEN 1 ELSE 0 END "
        "FROM requests WHERE model=? AND ts_start BETWEEN ? AND ? ORDER BY ts_start",
        (model, t0, t1)).fetchall()
    return np.array(rows, dtype=np.float64).reshape(-1, 5) if rows else np.empty((0, 5))


def prompt_test_runs(conn: sqlite3.Connection, limit: int) -> list[PromptTestRun]:
    """The latest ``limit`` runs of the prompt test, newest first."""
    rows = conn.execute(
        "SELECT ts_start, model, ttft_s, COALESCE(server_tokens_per_s, client_tokens_per_s), "
        "completion_tokens, prompt_text FROM requests WHERE source='prompt_test' "
        "ORDER BY ts_start DESC LIMIT ?", (limit,)).fetchall()
    return [PromptTestRun(*row) for row in rows]
