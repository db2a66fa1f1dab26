"""Usage in 15-minute buckets, computed from the raw rows: one row per (bucket, session,
origin, server, model). :mod:`app.usage.merge` then keeps one figure of each per bucket, and
:mod:`app.usage.rollup` stores the result. Two *origins*, never mixed in a row:

``requests``
    The requests table (the metering proxy, prompt tests, benchmarks): each request counts
    once, in the bucket where it **started** (as everywhere else in llmmon): requests, errors
    (``not ok``: an error type, or a status outside 200–399), prompt and completion tokens,
    completion tokens that were chunk-count estimates, busy time, energy.
``counters``
    The servers' own counters, so traffic that did not pass the proxy counts too: llama.cpp's
    ``llamacpp_prompt_tokens_total`` / ``llamacpp_generation_tokens_total`` (increase between two
    readings of one session; a drop is a restart), vLLM's ``vllm_prompt_tokens_per_second``,
    ``vllm_generation_tokens_per_second`` and ``vllm_requests_finished_per_second`` (each rate
    times the time since the server's previous successful poll, its ``llm_poll_latency_seconds``
    reading: the interval the collector computed it over), and busy time from
    ``llamacpp_requests_processing`` / ``vllm_requests_running``
    (the time since the previous reading when the reading is above zero; at most
    :data:`GAUGE_MAX_GAP_S`). An increase counts in the bucket of the reading that shows it.
    llama.cpp's series carry no model: the model is the one ``llm_model_loaded`` reported for
    that server at the reading. Nothing is counted across sessions (llmmon was not watching).

Busy time: each instant a server was busy is split equally among what ran on it at that
instant (requests, or models busy at one reading), so the models' busy times add up to the
server's. Energy (:mod:`app.usage.energy`): the device's joules while a request ran, each
instant split among all requests in flight (any server), with ``energy_tokens`` the completion
tokens of the requests whose whole span had energy readings; ``energy_shared`` marks rows
where requests overlapped (an estimate).

Buckets are 15 minutes on the UTC epoch: every time zone's hours and days start on one (zones
are whole quarter hours from UTC), so local hours, days and weeks are sums of whole buckets.

"""
from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from app.records import labels_from_json, labels_json, labels_of
from app.usage.energy import load_curve, split_equally

BUCKET_S = 900.0
GAUGE_MAX_GAP_S = 15.0        # a busy reading vouches for at most this long before it
OVERLAP_LOOKBACK_S = 86400.0  # requests longer than this are not looked for when splitting time
REQUESTS, COUNTERS = "requests", "counters"

# series name -> (UsageRow field, how its readings become amounts)
SERVER_SERIES: dict[str, tuple[str, str]] = {
    "llamacpp_prompt_tokens_total": ("prompt_tokens", "counter"),
    "llamacpp_generation_tokens_total": ("completion_tokens", "counter"),
    "vllm_prompt_tokens_per_second": ("prompt_tokens", "rate"),
    "vllm_generation_tokens_per_second": ("completion_tokens", "rate"),
    "vllm_requests_finished_per_second": ("requests", "rate"),
    "llamacpp_requests_processing": ("busy_s", "gauge"),
    "vllm_requests_running": ("busy_s", "gauge"),
}
MODEL_SERIES = "llm_model_loaded"
POLL_SERIES = "llm_poll_latency_seconds"


def bucket_of(ts: float) -> float:
    return math.floor(ts / BUCKET_S) * BUCKET_S


def bucket_ceil(ts: float) -> float:
    return math.ceil(ts / BUCKET_S) * BUCKET_S


@dataclass(slots=True)
class UsageRow:
    """One bucket of one origin, server and model. ``None``: that origin does not count it."""

    bucket: float
    session_id: int | None
    origin: str
    server: str
    model: str
    requests: float | None = None
    errors: int | None = None
    prompt_tokens: float | None = None
    completion_tokens: float | None = None
    estimated_tokens: int | None = None
    busy_s: float | None = None
    energy_j: float | None = None
    energy_tokens: float | None = None
    energy_source: str = ""
    energy_shared: int = 0

    def add(self, name: str, amount: float) -> None:
        current = getattr(self, name)
        setattr(self, name, amount if current is None else current + amount)




# ----------------------------------------------------------------------------- computing
def compute_usage(conn: sqlite3.Connection, t0: float, t1: float) -> list[UsageRow]:
    """The usage rows of the buckets in ``[t0, t1)`` (both on bucket edges), from raw rows."""
    if t1 <= t0:
        return []
    rows: dict[tuple[float, int | None, str, str, str], UsageRow] = {}

    def row(bucket: float, session: int | None, origin: str, server: str, model: str) -> UsageRow:
        key = (bucket, session, origin, server, model)
        found = rows.get(key)
        if found is None:
            found = rows[key] = UsageRow(*key)
        return found

    _request_usage(conn, t0, t1, row)
    _counter_usage(conn, t0, t1, row)
    return sorted(rows.values(), key=lambda r: (r.bucket, r.origin, r.server, r.model, r.session_id or 0))


Row = Callable[[float, "int | None", str, str, str], UsageRow]


def _request_usage(conn: sqlite3.Connection, t0: float, t1: float, row: Row) -> None:
    longest = conn.execute("SELECT max(latency_s) FROM requests WHERE ts_start>=? AND ts_start<?",
                           (t0 - OVERLAP_LOOKBACK_S, t1)).fetchone()[0] or 0.0
    lookback = min(float(longest), OVERLAP_LOOKBACK_S)
    data = conn.execute(
        "SELECT ts_start, ts_start + max(COALESCE(latency_s, 0), 0), session_id, server, model, "
        "CASE WHEN error_type != '' OR status < 200 OR status >= 400 THEN 1 ELSE 0 END, "
        "prompt_tokens, completion_tokens, tokens_estimated FROM requests "
        "WHERE ts_start>=? AND ts_start<? ORDER BY ts_start", (t0 - lookback, t1)).fetchall()
    if not data:
        return
    starts = np.array([d[0] for d in data], dtype=np.float64)
    ends = np.array([d[1] for d in data], dtype=np.float64)
    servers = [d[3] for d in data]
    busy = np.zeros(len(data))
    for server in set(servers):  # busy time is split among what ran on the same server
        mine = np.array([s == server for s in servers])
        busy[mine] = split_equally(starts[mine], ends[mine])[0]
    curve = load_curve(conn, float(starts.min()), float(ends.max()))
    if curve is not None:  # energy is split among everything that ran on the machine
        joules, shared = split_equally(starts, ends, curve.energy)
        covered = curve.covers(starts, ends) & (ends > starts)
    for i, (start, _end, session, server, model, error, prompt, completion, estimated) in enumerate(data):
        if start < t0:
            continue  # only a neighbour that shared the time
        r = row(bucket_of(start), session, REQUESTS, server, model)
        r.add("requests", 1)
        r.add("errors", int(error))
        r.add("prompt_tokens", prompt or 0)
        r.add("completion_tokens", completion or 0)
        r.add("estimated_tokens", (completion or 0) if estimated else 0)
        r.add("busy_s", float(busy[i]))
        if curve is not None and covered[i]:
            r.add("energy_j", float(joules[i]))
            r.add("energy_tokens", completion or 0)
            r.energy_source = curve.source
            r.energy_shared |= int(shared[i])


@dataclass(frozen=True, slots=True)
class _Readings:
    """One server series' readings in a range, each with what it is an increase over: the
    reading before it (counters, gauges), or the server's poll before it (rates)."""

    field: str
    how: str
    server: str
    model: str | None     # None: from the server's loaded model
    ts: np.ndarray
    values: np.ndarray
    sessions: np.ndarray
    prev_ts: np.ndarray
    prev_values: np.ndarray
    prev_sessions: np.ndarray


def _read_series(conn: sqlite3.Connection, sid: int, t0: float, t1: float) -> np.ndarray:
    """``(session, ts, value)`` rows of one series in ``[t0, t1)`` and the reading just before
    (session -1 when a row has none), oldest first."""
    rows = conn.execute(
        "SELECT ifnull(session_id, -1), ts, value FROM (SELECT session_id, ts, value FROM samples "
        "WHERE series_id=? AND ts<? ORDER BY ts DESC LIMIT 1) UNION ALL SELECT ifnull(session_id, -1), ts, value "
        "FROM samples WHERE series_id=? AND ts>=? AND ts<?", (sid, t0, sid, t0, t1)).fetchall()
    if not rows:
        return np.empty((0, 3))
    data = np.array(rows, dtype=np.float64)
    return data[np.argsort(data[:, 1], kind="stable")]


def _server_readings(conn: sqlite3.Connection, t0: float, t1: float) -> list[_Readings]:
    names = tuple(SERVER_SERIES)
    found = conn.execute(f"SELECT id, name, labels FROM series WHERE name IN ({','.join('?' * len(names))})",
                         names).fetchall()
    polls: dict[str, np.ndarray] = {}
    out = []
    for sid, name, labels_text in found:
        labels = dict(labels_from_json(labels_text))
        server = labels.get("server", "")
        data = _read_series(conn, sid, t0, t1)
        field, how = SERVER_SERIES[name]
        if how == "rate":
            # A rate is the increase since the server's previous successful poll (the first poll
            # has no rate): every successful poll leaves a llm_poll_latency_seconds reading.
            if server not in polls:
                polls[server] = _poll_times(conn, server, t0, t1)
            before = polls[server]
            index = np.searchsorted(before[:, 1], data[:, 1], side="left") - 1
            known = index >= 0
            data, prev = data[known], before[index[known]]
            prev = np.column_stack([prev[:, 0], prev[:, 1], np.zeros(len(prev))])
        else:
            data, prev = data[1:], data[:-1]
        if len(data):
            out.append(_Readings(field, how, server, labels.get("model"), data[:, 1], data[:, 2], data[:, 0],
                                 prev[:, 1], prev[:, 2], prev[:, 0]))
    return out


def _poll_times(conn: sqlite3.Connection, server: str, t0: float, t1: float) -> np.ndarray:
    """``(session, ts, _)`` of the server's successful polls in ``[t0, t1)`` and the one before."""
    sid = conn.execute("SELECT id FROM series WHERE name=? AND labels=?",
                       (POLL_SERIES, labels_json(labels_of(server=server)))).fetchone()
    return _read_series(conn, int(sid[0]), t0, t1) if sid is not None else np.empty((0, 3))


@dataclass(frozen=True, slots=True)
class _Timeline:
    """When a server reported which model loaded: times, and an index into ``models``."""

    ts: np.ndarray
    codes: np.ndarray
    models: list[str]


def _loaded_models(conn: sqlite3.Connection, servers: Iterable[str], t0: float, t1: float) -> dict[str, _Timeline]:
    """Per server: the times it reported a loaded model, and which (for series without one)."""
    wanted = set(servers)
    parts: dict[str, list[tuple[np.ndarray, str]]] = defaultdict(list)
    for sid, labels_text in conn.execute("SELECT id, labels FROM series WHERE name=?", (MODEL_SERIES,)):
        labels = dict(labels_from_json(labels_text))
        if labels.get("server") in wanted:
            parts[labels["server"]].append((_read_series(conn, sid, t0, t1)[:, 1], labels.get("model", "")))
    out = {}
    for server, series in parts.items():
        ts = np.concatenate([t for t, _ in series])
        codes = np.concatenate([np.full(len(t), i) for i, (t, _) in enumerate(series)])
        order = np.argsort(ts, kind="stable")
        out[server] = _Timeline(ts[order], codes[order], [m for _, m in series])
    return out


class _Names:
    """Texts (servers, models) as small integer codes, so readings group with integer keys."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, text: str) -> int:
        if text not in self._codes:
            self._codes[text] = len(self.texts)
            self.texts.append(text)
        return self._codes[text]


def _model_codes(r: _Readings, models: dict[str, _Timeline], ts: np.ndarray, names: _Names) -> np.ndarray:
    """The model of each reading as a code: the series' own label, else the server's model then."""
    if r.model is not None:
        return np.full(len(ts), names.code(r.model))
    timeline = models.get(r.server)
    if timeline is None or not len(timeline.ts):
        return np.full(len(ts), names.code(""))
    index = np.searchsorted(timeline.ts, ts, side="right") - 1
    lookup = np.array([*(names.code(m) for m in timeline.models), names.code("")])
    return lookup[np.where(index >= 0, timeline.codes[np.maximum(index, 0)], len(timeline.models))]


def _groups(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of integer columns (each row's values as a 2-D array) and each input
    row's group index."""
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in columns])
    low = stacked.min(axis=1, keepdims=True)
    dims = tuple(int(d) for d in (stacked.max(axis=1) - low[:, 0] + 1))
    keys, inverse = np.unique(np.ravel_multi_index(tuple(stacked - low), dims), return_inverse=True)
    rows = np.stack(np.unravel_index(keys, dims), axis=1) + low[:, 0]
    return rows, inverse.reshape(-1)


@dataclass(frozen=True, slots=True)
class _Keys:
    """How a reading's integer key columns (bucket index, session, server, model) map back."""

    t0: float
    names: _Names

    def row(self, row: Row, key: np.ndarray) -> UsageRow:
        bucket, session, server, model = (int(k) for k in key)
        return row(self.t0 + bucket * BUCKET_S, session if session >= 0 else None, COUNTERS,
                   self.names.texts[server], self.names.texts[model])


def _counter_usage(conn: sqlite3.Connection, t0: float, t1: float, row: Row) -> None:
    readings = _server_readings(conn, t0, t1)
    if not readings:
        return
    models = _loaded_models(conn, {r.server for r in readings if r.model is None}, t0 - 3600.0, t1)
    names = _Names()
    keys = _Keys(t0, names)
    busy_parts: list[tuple[np.ndarray, ...]] = []      # (start, end, bucket, session, server, model)
    tokens_parts: list[tuple[np.ndarray, ...]] = []    # completion increases: (ts, amount, key columns...)
    for r in readings:
        ts, values = r.ts, r.values
        inside = (ts >= t0) & (ts < t1) & (r.sessions == r.prev_sessions)
        dt = ts - r.prev_ts
        if r.how == "counter":
            deltas = values - r.prev_values
            amounts = np.where(deltas >= 0, deltas, values)
        elif r.how == "rate":
            amounts = values * dt
        else:
            amounts = np.where(values > 0, np.minimum(dt, GAUGE_MAX_GAP_S), 0.0)
        ts, amounts, sessions = ts[inside], amounts[inside], r.sessions[inside]
        if not len(ts):
            continue
        columns = (np.floor((ts - t0) / BUCKET_S), sessions, np.full(len(ts), names.code(r.server)),
                   _model_codes(r, models, ts, names))
        if r.how == "gauge":  # a busy interval per reading; idle ones still make the row exist
            busy_parts.append((ts - amounts, ts, *columns))
            continue
        groups, index = _groups(*columns)
        for key, amount in zip(groups, np.bincount(index, weights=amounts, minlength=len(groups)), strict=True):
            keys.row(row, key).add(r.field, float(amount))
        if r.field == "completion_tokens":
            tokens_parts.append((ts, amounts, *columns))
    if busy_parts:
        _counter_busy(conn, [np.concatenate(c) for c in zip(*busy_parts, strict=True)], tokens_parts, keys, row)


def _counter_busy(conn: sqlite3.Connection, busy: list[np.ndarray], tokens_parts: list[tuple[np.ndarray, ...]],
                  keys: _Keys, row: Row) -> None:
    """Busy readings as intervals: their time split per server, their energy over the machine;
    the completion tokens counted while energy readings existed."""
    starts, ends, *columns = busy
    servers = columns[2]
    seconds = np.zeros(len(starts))
    for server in np.unique(servers):
        mine = servers == server
        seconds[mine] = split_equally(starts[mine], ends[mine])[0]
    groups, index = _groups(*columns)
    for key, amount in zip(groups, np.bincount(index, weights=seconds, minlength=len(groups)), strict=True):
        keys.row(row, key).add("busy_s", float(amount))
    busy_now = ends > starts
    if not busy_now.any():
        return
    curve = load_curve(conn, float(starts[busy_now].min()), float(ends[busy_now].max()))
    if curve is None:
        return
    joules, shared = split_equally(starts, ends, curve.energy)
    covered = curve.covers(starts, ends) & busy_now
    if covered.any():
        groups, index = _groups(*(c[covered] for c in columns))
        sums = np.bincount(index, weights=joules[covered], minlength=len(groups))
        crowded = np.bincount(index, weights=shared[covered].astype(float), minlength=len(groups))
        for key, amount, overlap in zip(groups, sums, crowded, strict=True):
            r = keys.row(row, key)
            r.add("energy_j", float(amount))
            r.energy_source = curve.source
            r.energy_shared |= int(overlap > 0)
    lo, hi = curve.coverage
    for ts, amounts, *key_columns in tokens_parts:
        within = (ts >= lo) & (ts <= hi)
        if within.any():
            groups, index = _groups(*(c[within] for c in key_columns))
            sums = np.bincount(index, weights=amounts[within], minlength=len(groups))
            for key, amount in zip(groups, sums, strict=True):
                keys.row(row, key).add("energy_tokens", float(amount))


