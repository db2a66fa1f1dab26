"""The usage of a range, per server and model, grouped by local hour, day or week: the rows of
the Usage tab and of ``main.py usage``.

**Which source counts** (never both): per 15-minute bucket and server, a figure the server's
own counters give (llama.cpp and vLLM ``/metrics``: prompt and completion tokens, vLLM also
requests, both busy time) is taken from the counters, and what the proxy, prompt tests and
benchmarks measured for that server in that bucket is shown as the part of it that was
measured per request (:attr:`UsageCell.measured`). Figures no counter gives (errors, requests
on llama.cpp, anything on Ollama or a plain OpenAI-compatible server, or a server whose
``/metrics`` was off) come from the requests. So a request seen by the proxy and by the server's
counters counts once, and traffic that bypassed the proxy still counts. A llama.cpp server
serves one model whatever name a client sends: its requests are counted under the model the
server reported. Counters rise when a request ends and requests count when they start, so
near a period's edge the measured part can differ from the total by a request; llama.cpp's
prompt counter leaves out prompt tokens served from its cache, so it can be far below the
prompt tokens the requests reported. Busy time is the exception to "the counter wins": the
servers' busy gauges are read once a second and can miss short requests, so a bucket's busy
time is the larger of the two (the source says which).

Energy per token comes from the same source as the completion tokens: joules over the
counted requests' spans divided by their completion tokens, or joules over the server's busy
time divided by its counted tokens.
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.usage.periods import period_start
from app.usage.rollup import COUNTERS, UsageRow, usage_rows

METRICS = ("requests", "prompt_tokens", "completion_tokens", "busy_s")
SERVER, REQUESTS = "server counters", "measured requests"


@dataclass(slots=True)
class _Sum:
    """Mutable sums while a report is built."""

    requests: float = 0.0
    errors: int = 0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    busy_s: float = 0.0
    estimated_tokens: int = 0
    measured: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    sources: dict[str, set[str]] = field(default_factory=lambda: {m: set() for m in METRICS})
    energy_j: float = 0.0
    energy_tokens: float = 0.0
    energy_sources: set[str] = field(default_factory=set)
    energy_shared: bool = False

    def add(self, other: _Sum) -> None:
        for name in (*METRICS, "errors", "estimated_tokens", "energy_j", "energy_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for m in METRICS:
            self.measured[m] += other.measured[m]
            self.sources[m] |= other.sources[m]
        self.energy_sources |= other.energy_sources
        self.energy_shared |= other.energy_shared


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


def _freeze(start: float, server: str, model: str, s: _Sum) -> UsageCell:
    return UsageCell(start, server, model, s.requests, s.errors, s.prompt_tokens, s.completion_tokens,
                     s.busy_s, s.estimated_tokens, dict(s.measured),
                     {m: frozenset(v) for m, v in s.sources.items()}, s.energy_j, s.energy_tokens,
                     frozenset(s.energy_sources), s.energy_shared)


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

    def by_server(self) -> UsageReport:
        """The same report with the models of each server added up (``model`` is ``""``)."""
        return _report(self.t0, self.t1, self.group,
                       [((c.start, c.server, ""), _thaw(c)) for c in self.cells])


def _thaw(c: UsageCell) -> _Sum:
    return _Sum(c.requests, c.errors, c.prompt_tokens, c.completion_tokens, c.busy_s, c.estimated_tokens,
                dict(c.measured), {m: set(v) for m, v in c.sources.items()}, c.energy_j, c.energy_tokens,
                set(c.energy_sources), c.energy_shared)


def _summed(rows: Iterable[UsageRow]) -> UsageRow:
    """Rows of several sessions of one bucket, origin, server and model, added up."""
    rows = list(rows)
    out = UsageRow(rows[0].bucket, None, rows[0].origin, rows[0].server, rows[0].model)
    for r in rows:
        for name in (*METRICS, "errors", "estimated_tokens", "energy_j", "energy_tokens"):
            value = getattr(r, name)
            if value is not None:
                out.add(name, value)
        out.energy_source = out.energy_source or r.energy_source
        out.energy_shared |= r.energy_shared
    return out


def merge_sources(rows: Iterable[UsageRow]) -> list[tuple[tuple[float, str, str], _Sum]]:
    """One figure per bucket, server and model, by the rule above."""
    grouped: dict[tuple[float, str], dict[str, dict[str, list[UsageRow]]]] = defaultdict(
        lambda: {COUNTERS: defaultdict(list), "requests": defaultdict(list)})
    for r in rows:
        grouped[(r.bucket, r.server)][r.origin][r.model].append(r)
    out = []
    for (bucket, server), origins in grouped.items():
        counters = {m: _summed(rs) for m, rs in origins[COUNTERS].items()}
        measured_rows = origins["requests"]
        if len(counters) == 1:  # llama.cpp: one model, whatever the clients called it
            only = next(iter(counters))
            measured_rows = {only: [r for rs in measured_rows.values() for r in rs]} if measured_rows else {}
        requests = {m: _summed(rs) for m, rs in measured_rows.items() if rs}
        covered = {m for m in METRICS if any(getattr(c, m) is not None for c in counters.values())}
        for model in sorted(set(counters) | set(requests)):
            c, q = counters.get(model), requests.get(model)
            s = _Sum()
            for m in METRICS:
                by_request = getattr(q, m) if q is not None else None
                if m in covered:
                    counted = (getattr(c, m) or 0.0) if c is not None else 0.0
                    s.measured[m] = by_request or 0.0
                    if m == "busy_s" and s.measured[m] > counted:  # a 1 Hz busy gauge missed it
                        setattr(s, m, s.measured[m])
                        s.sources[m].add(REQUESTS)
                    else:
                        setattr(s, m, counted)
                        s.sources[m].add(SERVER)
                elif by_request is not None:
                    setattr(s, m, by_request)
                    s.measured[m] = by_request
                    s.sources[m].add(REQUESTS)
            if q is not None:
                s.errors = int(q.errors or 0)
                s.estimated_tokens = int(q.estimated_tokens or 0)
            energy = c if "completion_tokens" in covered else q
            if energy is not None and energy.energy_j is not None:
                s.energy_j = energy.energy_j
                s.energy_tokens = energy.energy_tokens or 0.0
                s.energy_sources.add(energy.energy_source)
                s.energy_shared = bool(energy.energy_shared)
            out.append(((bucket, server, model), s))
    return out


def _report(t0: float, t1: float, group: str, items: Iterable[tuple[tuple[float, str, str], _Sum]]) -> UsageReport:
    cells: dict[tuple[float, str, str], _Sum] = defaultdict(_Sum)
    rows: dict[tuple[str, str], _Sum] = defaultdict(_Sum)
    total = _Sum()
    starts: dict[float, float] = {}
    for (bucket, server, model), s in items:
        if bucket not in starts:
            starts[bucket] = period_start(bucket, group) if group != "none" else t0
        cells[(starts[bucket], server, model)].add(s)
        rows[(server, model)].add(s)
        total.add(s)
    return UsageReport(
        t0, t1, group, sorted(set(starts.values())),
        [_freeze(k[0], k[1], k[2], s) for k, s in sorted(cells.items())],
        [_freeze(t0, k[0], k[1], s) for k, s in sorted(rows.items())],
        _freeze(t0, "", "", total))


def usage_report(conn: sqlite3.Connection, t0: float, t1: float, group: str = "day") -> UsageReport:
    """Usage in ``[t0, t1)`` (widened to whole 15-minute buckets) grouped by ``hour``, ``day``
    or ``week`` of local time."""
    return _report(t0, t1, group, merge_sources(usage_rows(conn, t0, t1)))
