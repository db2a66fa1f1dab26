"""Usage in 15-minute buckets, computed from the raw rows and kept in ``usage_rollup``.

One row per (bucket, session, origin, server, model). Two *origins*, never mixed in a row:

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
    times the time since the series' previous reading, which is the interval it was computed
    over), and busy time from ``llamacpp_requests_processing`` / ``vllm_requests_running``
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

:class:`UsageRollup` keeps the table: on the store's writer thread (``Store.call``), a chunk
at a time, up to :data:`LAG_S` before now; rows that arrive later for buckets already rolled
up (a long request is written when it ends, a write that was retried) are found by their row
ids and their buckets recomputed. Rollup rows live as long as their session: deleting a
session deletes them, time-based retention of the raw rows leaves them.
"""
from __future__ import annotations

import functools
import logging
import math
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import sqlite_utils

from app.records import labels_from_json
from app.usage.energy import load_curve, split_equally

if TYPE_CHECKING:
    from app.storage.store import Store

log = logging.getLogger(__name__)

BUCKET_S = 900.0
LAG_S = 60.0                  # roll up to this long before now: the last rows are being written
CHUNK_S = 6 * 3600.0          # one writer-thread call rolls up at most this much
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

    @property
    def key(self) -> tuple[float, int | None, str, str, str]:
        return (self.bucket, self.session_id, self.origin, self.server, self.model)

    def add(self, name: str, amount: float) -> None:
        current = getattr(self, name)
        setattr(self, name, amount if current is None else current + amount)


COLUMNS = tuple(f.name for f in fields(UsageRow))


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
    """One server series' readings in a range, with the one before it."""

    field: str
    how: str
    server: str
    model: str | None     # None: from the server's loaded model
    ts: np.ndarray
    values: np.ndarray
    sessions: np.ndarray


def _read_series(conn: sqlite3.Connection, sid: int, t0: float, t1: float) -> np.ndarray:
    """``(session, ts, value)`` rows of one series in ``[t0, t1)`` and the reading just before."""
    rows = conn.execute(
        "SELECT session_id, ts, value FROM (SELECT session_id, ts, value FROM samples WHERE series_id=? "
        "AND ts<? ORDER BY ts DESC LIMIT 1) UNION ALL SELECT session_id, ts, value FROM samples "
        "WHERE series_id=? AND ts>=? AND ts<?", (sid, t0, sid, t0, t1)).fetchall()
    if not rows:
        return np.empty((0, 3))
    data = np.array([(s if s is not None else -1, t, v) for s, t, v in rows], dtype=np.float64)
    return data[np.argsort(data[:, 1], kind="stable")]


def _server_readings(conn: sqlite3.Connection, t0: float, t1: float) -> list[_Readings]:
    names = tuple(SERVER_SERIES)
    found = conn.execute(f"SELECT id, name, labels FROM series WHERE name IN ({','.join('?' * len(names))})",
                         names).fetchall()
    out = []
    for sid, name, labels_text in found:
        labels = dict(labels_from_json(labels_text))
        data = _read_series(conn, sid, t0, t1)
        if len(data) < 2:
            continue
        field, how = SERVER_SERIES[name]
        out.append(_Readings(field, how, labels.get("server", ""), labels.get("model"),
                             data[:, 1], data[:, 2], data[:, 0]))
    return out


def _loaded_models(conn: sqlite3.Connection, servers: Iterable[str], t0: float,
                   t1: float) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per server: the times it reported a loaded model, and which (for series without one)."""
    wanted = set(servers)
    timelines: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for sid, labels_text in conn.execute("SELECT id, labels FROM series WHERE name=?", (MODEL_SERIES,)):
        labels = dict(labels_from_json(labels_text))
        if labels.get("server") not in wanted:
            continue
        for _session, ts, _value in _read_series(conn, sid, t0, t1):
            timelines[labels["server"]].append((float(ts), labels.get("model", "")))
    out = {}
    for server, points in timelines.items():
        points.sort()
        out[server] = (np.array([p[0] for p in points]), [p[1] for p in points])
    return out


def _model_names(r: _Readings, models: dict[str, tuple[np.ndarray, list[str]]], ts: np.ndarray) -> np.ndarray:
    """The model of each reading: the series' own label, else the server's loaded model then."""
    if r.model is not None:
        return np.full(len(ts), r.model, dtype=object)
    timeline = models.get(r.server)
    if timeline is None or not len(timeline[0]):
        return np.full(len(ts), "", dtype=object)
    index = np.searchsorted(timeline[0], ts, side="right") - 1
    names = np.array([*timeline[1], ""], dtype=object)  # index -1 (nothing loaded yet) -> ""
    return names[index]


def _groups(*columns: np.ndarray) -> tuple[list[tuple[object, ...]], np.ndarray]:
    """The distinct rows of the columns (floats or texts) and each row's group index."""
    codes = []
    values = []
    for column in columns:
        uniques, inverse = np.unique(column, return_inverse=True)
        codes.append(inverse)
        values.append(uniques)
    keys, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    return [tuple(values[c][k] for c, k in enumerate(key)) for key in keys], inverse.reshape(-1)


def _counter_usage(conn: sqlite3.Connection, t0: float, t1: float, row: Row) -> None:
    readings = _server_readings(conn, t0, t1)
    if not readings:
        return
    models = _loaded_models(conn, {r.server for r in readings if r.model is None}, t0 - 3600.0, t1)
    busy_parts: list[tuple[np.ndarray, ...]] = []      # (start, end, bucket, session, server, model)
    tokens_parts: list[tuple[np.ndarray, ...]] = []    # completion increases: (ts, bucket, ...)
    for r in readings:
        ts, values = r.ts[1:], r.values[1:]
        inside = (ts >= t0) & (ts < t1) & (r.sessions[1:] == r.sessions[:-1])
        dt = np.diff(r.ts)
        if r.how == "counter":
            deltas = np.diff(r.values)
            amounts = np.where(deltas >= 0, deltas, values)
        elif r.how == "rate":
            amounts = values * dt
        else:
            amounts = np.where(values > 0, np.minimum(dt, GAUGE_MAX_GAP_S), 0.0)
        ts, amounts, sessions = ts[inside], amounts[inside], r.sessions[1:][inside]
        if not len(ts):
            continue
        buckets = np.floor(ts / BUCKET_S) * BUCKET_S
        names = _model_names(r, models, ts)
        servers = np.full(len(ts), r.server, dtype=object)
        if r.how == "gauge":  # a busy interval per reading; idle ones still make the row exist
            busy_parts.append((ts - amounts, ts, buckets, sessions, servers, names))
            continue
        keys, group = _groups(buckets, sessions, names)
        sums = np.bincount(group, weights=amounts, minlength=len(keys))
        for (bucket, session, model), amount in zip(keys, sums, strict=True):
            _row(row, bucket, session, r.server, model).add(r.field, float(amount))
        if r.field == "completion_tokens":
            tokens_parts.append((ts, amounts, buckets, sessions, servers, names))
    if busy_parts:
        _counter_busy(conn, [np.concatenate(c) for c in zip(*busy_parts, strict=True)], tokens_parts, row)


def _row(row: Row, bucket: object, session: object, server: object, model: object) -> UsageRow:
    sid = int(float(session))  # type: ignore[arg-type]
    return row(float(bucket), sid if sid >= 0 else None, COUNTERS, str(server), str(model))  # type: ignore[arg-type]


def _counter_busy(conn: sqlite3.Connection, busy: list[np.ndarray], tokens_parts: list[tuple[np.ndarray, ...]],
                  row: Row) -> None:
    """Busy readings as intervals: their time split per server, their energy over the machine;
    the completion tokens counted while energy readings existed."""
    starts, ends, buckets, sessions, servers, names = busy
    seconds = np.zeros(len(starts))
    for server in set(servers.tolist()):
        mine = servers == server
        seconds[mine] = split_equally(starts[mine], ends[mine])[0]
    keys, group = _groups(buckets, sessions, servers, names)
    sums = np.bincount(group, weights=seconds, minlength=len(keys))
    for key, amount in zip(keys, sums, strict=True):
        _row(row, *key).add("busy_s", float(amount))
    busy_now = ends > starts
    if not busy_now.any():
        return
    curve = load_curve(conn, float(starts[busy_now].min()), float(ends[busy_now].max()))
    if curve is None:
        return
    joules, shared = split_equally(starts, ends, curve.energy)
    covered = curve.covers(starts, ends) & busy_now
    if covered.any():
        keys, group = _groups(buckets[covered], sessions[covered], servers[covered], names[covered])
        sums = np.bincount(group, weights=joules[covered], minlength=len(keys))
        crowded = np.bincount(group, weights=shared[covered].astype(float), minlength=len(keys))
        for key, amount, overlap in zip(keys, sums, crowded, strict=True):
            r = _row(row, *key)
            r.add("energy_j", float(amount))
            r.energy_source = curve.source
            r.energy_shared |= int(overlap > 0)
    lo, hi = curve.coverage
    for ts, amounts, *key_columns in tokens_parts:
        within = (ts >= lo) & (ts <= hi)
        if within.any():
            keys, group = _groups(*(c[within] for c in key_columns))
            sums = np.bincount(group, weights=amounts[within], minlength=len(keys))
            for key, amount in zip(keys, sums, strict=True):
                _row(row, *key).add("energy_tokens", float(amount))


# ----------------------------------------------------------------------------- reading back
def rolled_until(conn: sqlite3.Connection) -> float | None:
    """The end of what ``usage_rollup`` holds (buckets before it are final), or None."""
    try:
        found = conn.execute("SELECT done_until FROM usage_rollup_state WHERE id=1").fetchone()
    except sqlite3.OperationalError:  # a database from before the usage tables
        return None
    return None if found is None or found[0] is None else float(found[0])


def usage_rows(conn: sqlite3.Connection, t0: float, t1: float) -> list[UsageRow]:
    """Usage of the buckets in ``[bucket_of(t0), bucket_ceil(t1))``: rolled-up rows where the
    rollup has got to, the rest computed from the raw rows now."""
    t0, t1 = bucket_of(t0), bucket_ceil(t1)
    done = rolled_until(conn)
    out: list[UsageRow] = []
    if done is not None and done > t0:
        cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM usage_rollup WHERE bucket>=? AND bucket<?",
                              (t0, min(t1, done)))
        out = [UsageRow(*r) for r in cursor]
        t0 = max(t0, done)
    return out + compute_usage(conn, t0, t1)


# ----------------------------------------------------------------------------- keeping it
@dataclass(frozen=True, slots=True)
class _State:
    done_until: float
    requests_rowid: int
    samples_rowid: int


def _read_state(conn: sqlite3.Connection) -> _State | None:
    found = conn.execute("SELECT done_until, requests_rowid, samples_rowid FROM usage_rollup_state "
                         "WHERE id=1").fetchone()
    return None if found is None else _State(float(found[0]), int(found[1]), int(found[2]))


def _max_rowid(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT ifnull(max(rowid), 0) FROM {table}").fetchone()[0])


def _write_rows(conn: sqlite3.Connection, rows: list[UsageRow]) -> None:
    conn.executemany(f"INSERT INTO usage_rollup ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                     [astuple(r) for r in rows])


def _relevant_series(conn: sqlite3.Connection) -> list[int]:
    names = (*SERVER_SERIES, MODEL_SERIES)
    return [int(r[0]) for r in conn.execute(
        f"SELECT id FROM series WHERE name IN ({','.join('?' * len(names))})", names)]


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
    relevant = set(_relevant_series(conn))
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
            state = _State(start, 0, 0)
            conn.execute("INSERT INTO usage_rollup_state (id, done_until, requests_rowid, samples_rowid) "
                         "VALUES (1, ?, 0, 0)", (start,))
        else:
            for a, b in _ranges(_late_buckets(conn, state)):
                conn.execute("DELETE FROM usage_rollup WHERE bucket>=? AND bucket<?", (a, b))
                _write_rows(conn, compute_usage(conn, a, b))
        end = min(target, state.done_until + chunk_s)
        if end > state.done_until:
            _write_rows(conn, compute_usage(conn, state.done_until, end))
        conn.execute("DELETE FROM usage_rollup WHERE session_id NOT IN (SELECT id FROM sessions)")
        conn.execute("UPDATE usage_rollup_state SET done_until=?, requests_rowid=?, samples_rowid=? WHERE id=1",
                     (max(end, state.done_until), requests_rowid, samples_rowid))
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
            now = self.clock()
            if not self.store.call(functools.partial(rollup_step, now=now)).result(timeout):
                return

    def stop(self) -> None:
        self._stop.set()
