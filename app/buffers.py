"""In-memory recent history per series: the live charts read from here, not from SQLite.

Each series gets a preallocated numpy ring buffer of ``(ts, value)``; appending is O(1) and
reading a window returns ordered copies the GUI thread may keep. A per-series version counter
lets a chart skip a redraw when nothing changed.

>>> buffers = LiveBuffers(capacity=4)
>>> buffers.add([Sample("cpu_percent", 10.0, 1.0), Sample("cpu_percent", 20.0, 2.0)])
>>> buffers.window(("cpu_percent", ()))[1].tolist()
[10.0, 20.0]
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from app.records import Labels, Sample, SeriesKey


class _Ring:
    __slots__ = ("ts", "values", "start", "size", "version")

    def __init__(self, capacity: int) -> None:
        self.ts = np.empty(capacity, dtype=np.float64)
        self.values = np.empty(capacity, dtype=np.float64)
        self.start = 0
        self.size = 0
        self.version = 0

    def append(self, ts: float, value: float) -> None:
        capacity = len(self.ts)
        i = (self.start + self.size) % capacity
        self.ts[i] = ts
        self.values[i] = value
        if self.size < capacity:
            self.size += 1
        else:
            self.start = (self.start + 1) % capacity
        self.version += 1

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        end = self.start + self.size
        capacity = len(self.ts)
        if end <= capacity:
            return self.ts[self.start:end].copy(), self.values[self.start:end].copy()
        idx = np.r_[self.start:capacity, 0:end - capacity]
        return self.ts[idx], self.values[idx]


class LiveBuffers:
    """Thread-safe ring buffers, one per ``(name, labels)`` series.

    Args:
        capacity: points kept per series (default: a bit over one hour at 1 Hz).
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._rings: dict[SeriesKey, _Ring] = {}
        self._lock = threading.Lock()

    def add(self, samples: Iterable[Sample]) -> None:
        with self._lock:
            for s in samples:
                ring = self._rings.get(s.key)
                if ring is None:
                    ring = self._rings[s.key] = _Ring(self.capacity)
                ring.append(s.ts, s.value)

    def keys(self, name: str | None = None) -> list[SeriesKey]:
        """All series (optionally of one metric name), in a stable order."""
        with self._lock:
            keys = list(self._rings)
        return sorted(k for k in keys if name is None or k[0] == name)

    def find(self, name: str, **match: str) -> list[SeriesKey]:
        """Series of ``name`` whose labels include every ``key=value`` in ``match``."""
        return [k for k in self.keys(name) if all(dict(k[1]).get(m) == v for m, v in match.items())]

    def version(self, key: SeriesKey) -> int:
        ring = self._rings.get(key)
        return ring.version if ring else 0

    def window(self, key: SeriesKey, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ts, values)`` of one series, oldest first, optionally only ``ts >= since``."""
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                return np.empty(0), np.empty(0)
            ts, values = ring.ordered()
        if since is not None and len(ts):
            first = int(np.searchsorted(ts, since, side="left"))
            ts, values = ts[first:], values[first:]
        return ts, values

    def latest(self, key: SeriesKey) -> tuple[float, float] | None:
        """The newest ``(ts, value)`` of a series, or ``None`` when it has no points."""
        with self._lock:
            ring = self._rings.get(key)
            if ring is None or ring.size == 0:
                return None
            i = (ring.start + ring.size - 1) % len(ring.ts)
            return float(ring.ts[i]), float(ring.values[i])

    def oldest(self, key: SeriesKey) -> float | None:
        """The timestamp of the oldest point still held for a series."""
        with self._lock:
            ring = self._rings.get(key)
            return None if ring is None or ring.size == 0 else float(ring.ts[ring.start])

    def latest_value(self, name: str, labels: Labels = ()) -> float | None:
        point = self.latest((name, labels))
        return None if point is None else point[1]
