"""Where a chart's points come from: the live ring buffers when they cover the range, SQLite
(reduced to min/max per pixel bucket) when they don't. Long ranges are fetched from the
database at most every ``refetch_s`` seconds; the newest points in between come from the
buffers, so a 24 h chart costs one query a minute, not one per redraw."""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.buffers import LiveBuffers
from app.records import SeriesKey, labels_from_json
from app.storage.queries import series_buckets, series_id, series_ids
from app.storage.reader import ReadConnection

log = logging.getLogger(__name__)


@dataclass
class _Cached:
    t0: float
    t1: float       # newest point fetched; newer ones come from the buffers
    span: float
    fetched_at: float
    ts: np.ndarray
    values: np.ndarray


class HistorySource:
    """Points of one series over a range, from buffers or from the store's file.

    Args:
        buffers: the live ring buffers.
        connect: opens a read-only connection to the database (``Store.reader``); ``None``
            limits charts to what the buffers hold.
        refetch_s: how stale a long-range database fetch may get before it is redone.
    """

    def __init__(self, buffers: LiveBuffers, connect: Callable[[], sqlite3.Connection] | None = None,
                 refetch_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.buffers = buffers
        self._db = ReadConnection(connect) if connect is not None else None
        self.refetch_s = refetch_s
        self.clock = clock
        self._ids: dict[SeriesKey, int | None] = {}
        self._cache: dict[tuple[SeriesKey, int], _Cached] = {}
        self._names: dict[str, tuple[float, list[SeriesKey]]] = {}  # name -> (fetched at, series)
        self.queries = 0  # database round trips, for tests and the render benchmark

    def keys(self, name: str, t0: float) -> list[SeriesKey]:
        """Series of ``name`` with data in the buffers or (for ranges they miss) the database."""
        keys = self.buffers.keys(name)
        if keys and all(self._covers(k, t0) for k in keys):
            return keys
        return sorted(set(keys) | set(self._stored_keys(name)))

    def _stored_keys(self, name: str) -> list[SeriesKey]:
        """The series of ``name`` in the database, asked at most every ``refetch_s``: every
        chart calls :meth:`keys` on every redraw."""
        now = self.clock()
        known = self._names.get(name)
        if known is not None and now - known[0] <= self.refetch_s:
            return known[1]
        conn = self._connection()
        if conn is None:
            return []
        try:
            stored = [(name, labels_from_json(text)) for _, text in series_ids(conn, name)]
        except sqlite3.Error as exc:
            log.warning("history: listing %s failed: %s", name, exc)
            if self._db is not None:
                self._db.reset()
            return []
        self._names[name] = (now, stored)
        return stored

    def points(self, key: SeriesKey, t0: float, t1: float, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ts, values)`` of one series over ``[t0, t1]``, at most ~2 points per pixel when
        they come from the database."""
        ts, values = self.buffers.window(key, since=t0)
        if self._covers(key, t0) or self._db is None:
            return _clip(ts, values, t1)
        cached = self._cache.get((key, pixels))
        now = self.clock()
        span = t1 - t0
        if (cached is None or now - cached.fetched_at > self.refetch_s  # stale, or the range
                or abs(cached.t0 - t0) > span * 0.05 or abs(cached.span - span) > span * 0.05):  # moved
            cached = self._fetch(key, t0, t1, pixels, now)
            if cached is None:
                return _clip(ts, values, t1)
            self._cache[(key, pixels)] = cached
        tail = ts > cached.t1
        return _clip(np.concatenate([cached.ts, ts[tail]]), np.concatenate([cached.values, values[tail]]), t1)

    def invalidate(self) -> None:
        """Forget cached database fetches (the range or the session changed)."""
        self._cache.clear()
        self._names.clear()

    def _covers(self, key: SeriesKey, t0: float) -> bool:
        """The buffers hold this series back to ``t0`` (so the database has nothing more)."""
        oldest = self.buffers.oldest(key)
        return oldest is not None and oldest <= t0

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None:
            return None
        try:
            return self._db.get()
        except sqlite3.Error as exc:
            log.warning("charts cannot read history: %s", exc)
            return None

    def _fetch(self, key: SeriesKey, t0: float, t1: float, pixels: int, now: float) -> _Cached | None:
        conn = self._connection()
        if conn is None:
            return None
        try:
            if key not in self._ids or self._ids[key] is None:
                self._ids[key] = series_id(conn, *key)
            sid = self._ids[key]
            self.queries += 1
            if sid is None:
                ts, values = np.empty(0), np.empty(0)
            else:
                ts, values = series_buckets(conn, sid, t0, t1, max(pixels, 50))
        except sqlite3.Error as exc:
            log.warning("history query failed: %s", exc)
            if self._db is not None:
                self._db.reset()  # reconnect next time (the file may have been replaced)
            return None
        return _Cached(t0, float(ts[-1]) if len(ts) else t0, t1 - t0, now, ts, values)


def _clip(ts: np.ndarray, values: np.ndarray, t1: float) -> tuple[np.ndarray, np.ndarray]:
    if len(ts) and ts[-1] > t1:
        end = int(np.searchsorted(ts, t1, side="right"))
        return ts[:end], values[:end]
    return ts, values
