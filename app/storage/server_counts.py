"""What the LLM servers' own counters saw during a session: requests finished and tokens
processed, summed from the series the collectors stored (docs/metrics.md).

llmmon's requests table holds only what passed through its proxy or its prompt test; a client
talking to a server directly shows up only in the server's counters. Two kinds of series carry
them:

* rates computed between two scrapes (``vllm_requests_finished_per_second``,
  ``vllm_*_tokens_per_second``): each sample covers the time since the scrape before it, so the
  count is the sum of rate × the time to the previous sample (the first sample of a session
  gets the session's typical interval);
* raw counters (``llamacpp_*_tokens_total``): the count is the sum of their increases, a drop
  meaning the server restarted and counted again from zero.

llama.cpp's ``/metrics`` has no request counter (only requests in progress and deferred), so for
llama.cpp servers only tokens are known; :class:`ServerCounts` says which servers each figure
covers.

``session_server_counts(store.reader(), session_id)`` gives e.g. ``requests=20, tokens=9880,
request_servers=('vllm@127.0.0.1:8000',)`` (tests/core/test_storage_server_counts.py runs it on
recorded counters).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from app.server_kinds import own_series
from app.storage.sessions import session_window


@dataclass(frozen=True, slots=True)
class ServerCounts:
    """Totals over one session from the servers' own counters. ``requests``/``tokens`` are None
    when no server reported that figure; ``*_servers`` name the servers each one covers;
    ``*_estimated`` says a figure was summed from rates (exact to the rounding only when every
    scrape interval was measured as it was timed), not from raw counters."""

    requests: int | None = None
    tokens: int | None = None
    request_servers: tuple[str, ...] = ()
    token_servers: tuple[str, ...] = ()
    requests_estimated: bool = False
    tokens_estimated: bool = False


def _series(conn: sqlite3.Connection, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(series id, server label) of every series with one of ``names``."""
    if not names:
        return []
    marks = ",".join("?" * len(names))
    return [(sid, json.loads(labels).get("server", "")) for sid, labels in
            conn.execute(f"SELECT id, labels FROM series WHERE name IN ({marks})", names)]


def _integral(conn: sqlite3.Connection, series_id: int, session_id: int, low: float, high: float) -> float:
    """Sum of rate × seconds since the series' previous sample, within the session."""
    total, first_value, n, span = conn.execute(
        "SELECT total(value * dt), (SELECT value FROM samples WHERE series_id=:s AND session_id=:id "
        "  AND ts BETWEEN :lo AND :hi ORDER BY ts LIMIT 1), count(*), max(ts) - min(ts) FROM ("
        "  SELECT value, ts, ts - lag(ts) OVER (ORDER BY ts) AS dt FROM samples"
        "  WHERE series_id=:s AND session_id=:id AND ts BETWEEN :lo AND :hi)",
        {"s": series_id, "id": session_id, "lo": low, "hi": high}).fetchone()
    if not n:
        return 0.0
    # The first sample's interval began before the session (or before a scrape it can't see):
    # count it over the session's typical interval between scrapes.
    typical = span / (n - 1) if n > 1 else 0.0
    return float(total) + float(first_value or 0.0) * typical


def _increase(conn: sqlite3.Connection, series_id: int, session_id: int, low: float, high: float) -> float:
    """Sum of a counter's increases within the session (a drop: restarted from zero)."""
    (total,) = conn.execute(
        "SELECT total(CASE WHEN step >= 0 THEN step ELSE value END) FROM ("
        "  SELECT value, value - lag(value) OVER (ORDER BY ts) AS step FROM samples"
        "  WHERE series_id=? AND session_id=? AND ts BETWEEN ? AND ?) WHERE step IS NOT NULL",
        (series_id, session_id, low, high)).fetchone()
    return float(total)


def _has_samples(conn: sqlite3.Connection, series_id: int, session_id: int, low: float, high: float) -> bool:
    return conn.execute("SELECT 1 FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? AND session_id=? LIMIT 1",
                        (series_id, low, high, session_id)).fetchone() is not None


Measure = Callable[[sqlite3.Connection, int, int, float, float], float]


def _total(conn: sqlite3.Connection, session_id: int, low: float, high: float,
           kinds: tuple[tuple[tuple[str, ...], Measure], ...]) -> tuple[int | None, tuple[str, ...], bool]:
    """The summed count over every series of these names, the servers they came from, and
    whether any of it was summed from rates."""
    total, servers, from_rates = 0.0, set(), False
    for names, measure in kinds:
        for sid, server in _series(conn, names):
            if _has_samples(conn, sid, session_id, low, high):
                total += measure(conn, sid, session_id, low, high)
                servers.add(server)
                from_rates = from_rates or measure is _integral
    return (round(total) if servers else None), tuple(sorted(servers)), from_rates


def session_server_counts(conn: sqlite3.Connection, session_id: int, started: float,
                          ended: float | None, now: float) -> ServerCounts:
    """What the servers' counters saw during the session (``ended`` None: until ``now``)."""
    low, high = session_window(started, ended, now)
    # Which series count what comes from each server kind's line (app/server_kinds.py): rates
    # are integrated over time, counters summed by increase.
    request_rates = tuple(own_series("requests_finished_rate"))
    token_rates, token_counters = tuple(own_series("token_rates")), tuple(own_series("token_counters"))
    requests, request_servers, requests_estimated = _total(conn, session_id, low, high,
                                                           ((request_rates, _integral),))
    tokens, token_servers, tokens_estimated = _total(conn, session_id, low, high,
                                                     ((token_rates, _integral), (token_counters, _increase)))
    return ServerCounts(requests, tokens, request_servers, token_servers, requests_estimated, tokens_estimated)
