"""``usage_rollup``: the merged 15-minute usage rows (:mod:`app.usage.merge`) kept in the
database, so a month's view reads a few thousand rows instead of a million requests and ten
million samples.

:class:`UsageRollup` keeps the table: on the store's writer thread (``Store.call``), a chunk at
a time (:data:`CHUNK_S`), up to :data:`LAG_S` before now. Rows that arrive later for buckets
already rolled up (a long request is written when it ends, a write that was retried) are found
by their row ids and their buckets recomputed, with the neighbours whose time or energy they
share. Rollup rows live as long as their session: deleting a session deletes them; time-based
retention of the raw rows leaves them, so usage totals outlive the raw data. As the rollup
passes a local midnight it also keeps that day's trend figures per model
(:func:`app.usage.trends.store_days`), recomputed likewise when late rows arrive.

:func:`merged_rows` reads a range: rolled-up rows where the rollup has got to, the rest
computed from the raw rows on the spot (the same code), so a report is always complete.
"""
from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlite_utils

from app.usage.compute import (
    BUCKET_S,
    MODEL_SERIES,
    OVERLAP_LOOKBACK_S,
    SERVER_SERIES,
    bucket_ceil,
    bucket_of,
    compute_usage,
)
from app.usage.merge import MERGED_COLUMNS, as_tuple, merge_sources
from app.usage.periods import local_midnight
from app.usage.trends import day_starts, store_days

if TYPE_CHECKING:
    from app.storage.store import Store

LAG_S = 60.0                  # roll up to this long before now: the last rows are being written
CHUNK_S = 6 * 3600.0          # one writer-thread call rolls up at most this much


def rolled_until(conn: sqlite3.Connection) -> float | None:
    """The end of what ``usage_rollup`` holds (buckets before it are final), or None."""
    try:
        found = conn.execute("SELECT done_until FROM usage_rollup_state WHERE id=1").fetchone()
    except sqlite3.OperationalError:  # a database from before the usage tables
        return None
    return None if found is None or found[0] is None else float(found[0])


def merged_rows(conn: sqlite3.Connection, t0: float, t1: float) -> list[tuple[Any, ...]]:
    """The merged rows of the buckets in ``[bucket_of(t0), bucket_ceil(t1))`` as tuples in
    :data:`~app.usage.merge.MERGED_COLUMNS` order (a bucket can have a row per session: the
    report adds them up with the rest of its period)."""
    t0, t1 = bucket_of(t0), bucket_ceil(t1)
    done = rolled_until(conn)
    out: list[tuple[Any, ...]] = []
    if done is not None and done > t0:
        out = conn.execute(f"SELECT {', '.join(MERGED_COLUMNS)} FROM usage_rollup WHERE bucket>=? AND bucket<?",
                           (t0, min(t1, done))).fetchall()
        t0 = max(t0, done)
    return out + [as_tuple(r) for r in merge_sources(compute_usage(conn, t0, t1))]


# ----------------------------------------------------------------------------- keeping it
@dataclass(frozen=True, slots=True)
class _State:
    done_until: float
    requests_rowid: int
    samples_rowid: int
    trend_until: float    # the local midnight up to which usage_trend_day is kept


def _read_state(conn: sqlite3.Connection) -> _State | None:
    found = conn.execute("SELECT done_until, requests_rowid, samples_rowid, trend_until FROM usage_rollup_state "
                         "WHERE id=1").fetchone()
    return None if found is None else _State(float(found[0]), int(found[1]), int(found[2]), float(found[3]))


def _keep_days(conn: sqlite3.Connection, since: float, until: float) -> float:
    """Keep the trend rows of the complete local days from ``since`` (a local midnight) to
    ``until``; returns the midnight it got to."""
    complete = [float(e) for e in day_starts(since, until) if e <= until]
    if len(complete) > 1:
        store_days(conn, complete)
    return complete[-1] if complete else since


def _redo_days(conn: sqlite3.Connection, buckets: Iterable[float], trend_until: float) -> None:
    """Compute again the kept days holding these buckets (rows arrived late, or went away)."""
    for day in sorted({local_midnight(b) for b in buckets if b < trend_until}):
        store_days(conn, [float(e) for e in day_starts(day, day)[:2]])


def _max_rowid(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT ifnull(max(rowid), 0) FROM {table}").fetchone()[0])


def _roll(conn: sqlite3.Connection, t0: float, t1: float) -> None:
    rows = merge_sources(compute_usage(conn, t0, t1))
    conn.executemany(f"INSERT INTO usage_rollup ({', '.join(MERGED_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(MERGED_COLUMNS))})", [as_tuple(r) for r in rows])


def _relevant_series(conn: sqlite3.Connection) -> set[int]:
    names = (*SERVER_SERIES, MODEL_SERIES, "gpu_energy_joules_total", "gpu_power_watts", "cpu_energy_joules_total")
    return {int(r[0]) for r in conn.execute(f"SELECT id FROM series WHERE name IN ({','.join('?' * len(names))})",
                                            names)}


def _late_buckets(conn: sqlite3.Connection, state: _State) -> set[float]:
    """Buckets before ``done_until`` that got rows after they were rolled up."""
    late: set[float] = set()
    for start, end in conn.execute(
            "SELECT ts_start, ts_start + max(COALESCE(latency_s, 0), 0) FROM requests WHERE id>? AND ts_start<?",
            (state.requests_rowid, state.done_until)):
        # the request itself, and the buckets of neighbours whose time or energy it shares
        bucket = bucket_of(start - min(OVERLAP_LOOKBACK_S, end - start))
        while bucket <= min(end, state.done_until):
            late.add(bucket)
            bucket += BUCKET_S
    relevant = _relevant_series(conn)
    for series_id, ts in conn.execute("SELECT series_id, ts FROM samples WHERE rowid>? AND ts<?",
                                      (state.samples_rowid, state.done_until)):
        if series_id in relevant:  # the reading's bucket, and the next one's first increase
            late.update((bucket_of(ts), bucket_of(ts) + BUCKET_S))
    return {b for b in late if b < state.done_until}


def _ranges(buckets: Iterable[float]) -> list[tuple[float, float]]:
    """Sorted buckets as contiguous ``[start, end)`` ranges."""
    out: list[tuple[float, float]] = []
    for b in sorted(buckets):
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + BUCKET_S)
        else:
            out.append((b, b + BUCKET_S))
    return out


def rollup_step(db: sqlite_utils.Database, now: float, chunk_s: float = CHUNK_S, lag_s: float = LAG_S) -> bool:
    """One step of keeping ``usage_rollup`` (on the writer thread): recompute late buckets, then
    roll up at most ``chunk_s`` more. Returns True while there is more to roll up."""
    conn = db.conn
    state = _read_state(conn)
    requests_rowid, samples_rowid = _max_rowid(conn, "requests"), _max_rowid(conn, "samples")
    target = bucket_of(now - lag_s)
    with db.atomic():
        if state is None:
            first = conn.execute("SELECT min(started) FROM sessions").fetchone()[0]
            start = bucket_of(first) if first is not None else target
            state = _State(start, 0, 0, local_midnight(start))
            conn.execute("INSERT INTO usage_rollup_state (id, done_until, requests_rowid, samples_rowid, trend_until) "
                         "VALUES (1, ?, 0, 0, ?)", (start, state.trend_until))
        else:
            late = _late_buckets(conn, state)
            for a, b in _ranges(late):
                conn.execute("DELETE FROM usage_rollup WHERE bucket>=? AND bucket<?", (a, b))
                _roll(conn, a, b)
            _redo_days(conn, late, state.trend_until)
        end = min(target, state.done_until + chunk_s)
        if end > state.done_until:
            _roll(conn, state.done_until, end)
        gone = [r[0] for r in conn.execute(
            "SELECT DISTINCT bucket FROM usage_rollup WHERE session_id NOT IN (SELECT id FROM sessions)")]
        if gone:  # a deleted session: its usage goes, its days are computed again without it
            conn.execute("DELETE FROM usage_rollup WHERE session_id NOT IN (SELECT id FROM sessions)")
            _redo_days(conn, gone, state.trend_until)
        done_until = max(end, state.done_until)
        conn.execute("UPDATE usage_rollup_state SET done_until=?, requests_rowid=?, samples_rowid=?, trend_until=? "
                     "WHERE id=1", (done_until, requests_rowid, samples_rowid,
                                    _keep_days(conn, state.trend_until, done_until)))
    return end < target


class UsageRollup:
    """Brings ``usage_rollup`` up to date through the store's writer, one chunk per call (other
    writes go on in between). :class:`~app.usage.service.UsageService` calls :meth:`catch_up`
    every minute; :meth:`stop` ends a catch-up between two chunks.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._stop = threading.Event()

    def catch_up(self, timeout: float | None = 600.0) -> None:
        """Roll up everything up to now (blocks until done)."""
        while self.store.running and not self._stop.is_set():
            step = functools.partial(rollup_step, now=self.clock())
            if not self.store.call(step).result(timeout):
                return

    def stop(self) -> None:
        self._stop.set()
