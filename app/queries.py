"""Read-side queries on the store's file, for charts history, the session browser and export.

Every function takes a connection from :meth:`app.store.Store.reader` (or any sqlite3
connection on the file) so it can run on whichever thread needs it.
"""
from __future__ import annotations

import sqlite3

import numpy as np

from app.records import Labels, labels_json


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
