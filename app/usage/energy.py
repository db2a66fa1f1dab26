"""Energy over spans of time, from whatever the machine's sensors recorded, and its fair split
among requests that ran at the same time.

Sources, best first (the first one recorded over the span is used):

``gpu_counter``
    ``gpu_energy_joules_total{gpu}``: NVML's energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
    Volta and newer GPUs): exact between two readings.
``gpu_power``
    ``gpu_power_watts{gpu}``: power readings integrated with the trapezoid rule; a gap longer than
    :data:`MAX_POWER_GAP_S` between two readings counts nothing (the power was not known).
``cpu_rapl``
    ``cpu_energy_joules_total{zone}``: the CPU packages' RAPL counters (:mod:`collectors.energy`),
    for machines without an NVIDIA GPU.

Several GPUs (or CPU packages) are added up: the figure is the whole device's energy while a
request ran, idle draw included — what the request cost the machine, not a model's share of
the silicon. When requests overlap, each instant's energy is split equally among the requests
in flight (:func:`split_equally`) and the result is marked *shared*: an estimate, since the
device does not say which request used what.

>>> curve = EnergyCurve("gpu_power", [np.array([0.0, 10.0])], [np.array([0.0, 1000.0])])
>>> shares, shared = split_equally(np.array([0.0, 5.0]), np.array([10.0, 10.0]), curve.energy)
>>> shares.tolist(), shared.tolist()
([750.0, 250.0], [True, True])
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.storage.queries import series_ids

MAX_POWER_GAP_S = 30.0
SOURCES = (
    ("gpu_counter", "gpu_energy_joules_total"),
    ("gpu_power", "gpu_power_watts"),
    ("cpu_rapl", "cpu_energy_joules_total"),
)
SOURCE_TEXT = {
    "gpu_counter": "GPU energy counter (NVML)",
    "gpu_power": "GPU power readings",
    "cpu_rapl": "CPU package energy (RAPL)",
}


@dataclass(frozen=True, slots=True)
class EnergyCurve:
    """Cumulative joules of each device over time (one ``(ts, joules)`` pair of arrays per GPU
    or CPU package), from one source."""

    source: str
    ts: list[np.ndarray]
    joules: list[np.ndarray]

    @property
    def coverage(self) -> tuple[float, float]:
        """The span every device has readings for; outside it the energy is unknown."""
        if not self.ts:
            return (0.0, -1.0)
        return max(float(t[0]) for t in self.ts), min(float(t[-1]) for t in self.ts)

    def energy(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Joules used between each ``t0[i]`` and ``t1[i]`` (zero outside the readings)."""
        total = np.zeros(np.shape(t0))
        for ts, joules in zip(self.ts, self.joules, strict=True):
            total += np.interp(t1, ts, joules) - np.interp(t0, ts, joules)
        return total

    def covers(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        lo, hi = self.coverage
        return (np.asarray(t0) >= lo) & (np.asarray(t1) <= hi)


def counter_joules(values: np.ndarray) -> np.ndarray:
    """A raw energy counter made cumulative from zero; a drop is a restart (the driver or the
    collector began again) and counts the new reading as the increase, like Prometheus.

    >>> counter_joules(np.array([100.0, 150.0, 20.0, 30.0])).tolist()
    [0.0, 50.0, 70.0, 80.0]
    """
    if len(values) == 0:
        return np.empty(0)
    deltas = np.diff(values)
    increments = np.where(deltas >= 0, deltas, values[1:])
    return np.concatenate([[0.0], np.cumsum(increments)])


def power_joules(ts: np.ndarray, watts: np.ndarray, max_gap_s: float = MAX_POWER_GAP_S) -> np.ndarray:
    """Power readings integrated (trapezoid) into cumulative joules; gaps count nothing.

    >>> power_joules(np.array([0.0, 1.0, 2.0, 100.0]), np.array([100.0, 200.0, 200.0, 50.0])).tolist()
    [0.0, 150.0, 350.0, 350.0]
    """
    if len(ts) == 0:
        return np.empty(0)
    dt = np.diff(ts)
    steps = np.where(dt <= max_gap_s, (watts[1:] + watts[:-1]) / 2.0 * dt, 0.0)
    return np.concatenate([[0.0], np.cumsum(steps)])


def load_curve(conn: sqlite3.Connection, t0: float, t1: float) -> EnergyCurve | None:
    """The best energy source recorded over ``[t0, t1]`` (with one reading either side, so a
    span is covered up to its ends), or ``None`` when the machine recorded none."""
    for source, name in SOURCES:
        ts_list: list[np.ndarray] = []
        joules_list: list[np.ndarray] = []
        for sid, _labels in series_ids(conn, name):
            rows = conn.execute(
                "SELECT ts, value FROM (SELECT ts, value FROM samples WHERE series_id=? AND ts<? "
                "ORDER BY ts DESC LIMIT 1) UNION ALL SELECT ts, value FROM samples "
                "WHERE series_id=? AND ts>=? AND ts<=? UNION ALL SELECT ts, value FROM "
                "(SELECT ts, value FROM samples WHERE series_id=? AND ts>? ORDER BY ts LIMIT 1)",
                (sid, t0, sid, t0, t1, sid, t1)).fetchall()
            if len(rows) < 2:
                continue
            data = np.array(sorted(rows), dtype=np.float64)
            ts, values = data[:, 0], data[:, 1]
            ts_list.append(ts)
            joules_list.append(power_joules(ts, values) if source == "gpu_power" else counter_joules(values))
        if ts_list:
            return EnergyCurve(source, ts_list, joules_list)
    return None


def split_equally(starts: np.ndarray, ends: np.ndarray,
                  amount: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each interval's share of something that accrues over time (busy seconds by default, or
    joules with ``amount=curve.energy``), each instant's amount split equally among the intervals
    in flight at that instant. Returns ``(shares, shared)``: ``shared[i]`` is True when interval
    ``i`` overlapped another. The shares add up to the amount over the union of the intervals.

    >>> shares, shared = split_equally(np.array([0.0, 2.0, 10.0]), np.array([4.0, 6.0, 11.0]))
    >>> shares.tolist(), shared.tolist()
    ([3.0, 3.0, 1.0], [True, True, False])
    """
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.maximum(np.asarray(ends, dtype=np.float64), starts)
    if len(starts) == 0:
        return np.empty(0), np.empty(0, dtype=bool)
    bounds = np.unique(np.concatenate([starts, ends]))
    first = np.searchsorted(bounds, starts)
    last = np.searchsorted(bounds, ends)
    change = np.zeros(len(bounds) + 1)
    np.add.at(change, first, 1.0)
    np.add.at(change, last, -1.0)
    in_flight = np.cumsum(change)[: len(bounds) - 1]   # on segment [bounds[j], bounds[j + 1])
    seg_start, seg_end = bounds[:-1], bounds[1:]
    total = (seg_end - seg_start) if amount is None else amount(seg_start, seg_end)
    per_interval = np.where(in_flight > 0, total / np.maximum(in_flight, 1.0), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(per_interval)])
    crowded = np.concatenate([[0], np.cumsum(in_flight > 1)])
    return prefix[last] - prefix[first], (crowded[last] - crowded[first]) > 0
