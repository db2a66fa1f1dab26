"""The usage of a range, per server and model, grouped by local hour, day or week: the rows of
the Usage tab and of ``main.py usage``. Which source each figure comes from, and why nothing is
counted twice, is :mod:`app.usage.merge`'s rule; here the merged 15-minute rows are added up
(with numpy: a month is a few thousand rows).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.usage.merge import ENERGY_BITS, FROM_REQUESTS, FROM_SERVER, MERGED_COLUMNS, METRICS
from app.usage.periods import period_start
from app.usage.rollup import merged_rows

SERVER, REQUESTS = "server counters", "measured requests"
_NUMBERS = MERGED_COLUMNS[4:]   # after bucket, session, server, model
_BITS = [i for i, c in enumerate(_NUMBERS) if c.endswith("_from") or c == "energy_shared"]
_SUMS = [i for i in range(len(_NUMBERS)) if i not in _BITS]
_AT = {c: i for i, c in enumerate(_NUMBERS)}


@dataclass(frozen=True, slots=True)
class UsageCell:
    """The usage of one server and model (``""``: all of them) in one period, or over the
    whole range (``start`` is then the range's start).

    ``measured[m]`` is the part of figure ``m`` measured per request; ``sources[m]`` says where
    the figure came from (:data:`SERVER`, :data:`REQUESTS`, or both when a period mixes them).
    """

    start: float
    server: str
    model: str
    requests: float
    errors: int
    prompt_tokens: float
    completion_tokens: float
    busy_s: float
    estimated_tokens: int
    measured: dict[str, float]
    sources: dict[str, frozenset[str]]
    energy_j: float
    energy_tokens: float
    energy_sources: frozenset[str]
    energy_shared: bool

    @property
    def joules_per_token(self) -> float | None:
        return self.energy_j / self.energy_tokens if self.energy_tokens > 0 else None

    @property
    def total_tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens

    def source_text(self, metric: str) -> str:
        """Where a figure came from, e.g. "server counters (1,234 of them measured per request)"."""
        sources = self.sources[metric]
        if not sources:
            return "not counted"
        if SERVER in sources:
            part = self.measured[metric]
            note = f" ({part:,.0f} of them measured per request)" if part and metric != "busy_s" else ""
            return " and ".join(sorted(sources)) + note
        return REQUESTS


def _cell(start: float, server: str, model: str, v: np.ndarray) -> UsageCell:
    def number(name: str) -> float:
        return float(v[_AT[name]])

    def origins(bits: int) -> frozenset[str]:
        return frozenset(n for b, n in ((FROM_SERVER, SERVER), (FROM_REQUESTS, REQUESTS)) if bits & b)

    energy_bits = int(v[_AT["energy_from"]])
    return UsageCell(
        start, server, model, number("requests"), int(number("errors")), number("prompt_tokens"),
        number("completion_tokens"), number("busy_s"), int(number("estimated_tokens")),
        {m: number(f"{m}_measured") for m in METRICS}, {m: origins(int(v[_AT[f"{m}_from"]])) for m in METRICS},
        number("energy_j"), number("energy_tokens"),
        frozenset(name for name, bit in ENERGY_BITS.items() if energy_bits & bit), bool(v[_AT["energy_shared"]]))


def _aggregate(index: np.ndarray, groups: int, values: np.ndarray) -> np.ndarray:
    """Per group: the sums of the figures, the bitwise OR of the "from" bits."""
    out = np.zeros((groups, values.shape[1]))
    for col in _SUMS:
        out[:, col] = np.bincount(index, weights=values[:, col], minlength=groups)
    for col in _BITS:
        bits = np.zeros(groups, dtype=np.int64)
        np.bitwise_or.at(bits, index, values[:, col].astype(np.int64))
        out[:, col] = bits
    return out


@dataclass(frozen=True)
class UsageReport:
    """A range's usage: per period, server and model (``cells``), per server and model over the
    whole range (``rows``, the table), and everything (``total``)."""

    t0: float
    t1: float
    group: str
    periods: list[float]
    cells: list[UsageCell]
    rows: list[UsageCell]
    total: UsageCell
    merged: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    def by_server(self) -> UsageReport:
        """The same report with the models of each server added up (``model`` is ``""``)."""
        return build_report(self.merged, self.t0, self.t1, self.group, per_server=True)


def build_report(rows: list[tuple[Any, ...]], t0: float, t1: float, group: str,
                 per_server: bool = False) -> UsageReport:
    """Add up merged rows (tuples in :data:`MERGED_COLUMNS` order) per period (``hour``, ``day``,
    ``week``, or ``none``), server and model."""
    table = np.array(rows, dtype=object).reshape(len(rows), len(MERGED_COLUMNS))
    values = table[:, 4:].astype(np.float64)
    buckets, bucket_index = np.unique(table[:, 0].astype(np.float64), return_inverse=True)
    starts = np.array([period_start(b, group) if group != "none" else t0 for b in buckets])[bucket_index]
    names = sorted({(r[2], "" if per_server else r[3]) for r in rows})
    code = {n: i for i, n in enumerate(names)}
    keys = np.array([code[(r[2], "" if per_server else r[3])] for r in rows], dtype=np.int64)
    periods = np.unique(starts)
    period_index = np.searchsorted(periods, starts)
    cell_keys, cell_index = np.unique(period_index * max(len(names), 1) + keys, return_inverse=True)
    cell_index = cell_index.reshape(-1)
    cell_values = _aggregate(cell_index, len(cell_keys), values)
    width = max(len(names), 1)
    cells = [_cell(float(periods[k // width]), names[k % width][0], names[k % width][1], v)
             for k, v in zip(cell_keys.tolist(), cell_values, strict=True)]
    row_values = _aggregate(keys, len(names), values)
    total = _aggregate(np.zeros(len(rows), dtype=np.int64), 1, values)[0]
    return UsageReport(t0, t1, group, periods.tolist(), cells,
                       [_cell(t0, server, model, v) for (server, model), v in zip(names, row_values, strict=True)],
                       _cell(t0, "", "", total), rows)


def first_recorded(conn: sqlite3.Connection) -> float | None:
    """When the database's history begins (its first session or request): where "all" starts."""
    row = conn.execute("SELECT min(t) FROM (SELECT min(started) AS t FROM sessions "
                       "UNION ALL SELECT min(ts_start) FROM requests)").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def usage_report(conn: sqlite3.Connection, t0: float, t1: float, group: str = "day") -> UsageReport:
    """Usage in ``[t0, t1)`` (widened to whole 15-minute buckets) grouped by ``hour``, ``day``
    or ``week`` of local time, or ``none``."""
    return build_report(merged_rows(conn, t0, t1), t0, t1, group)
