"""Reading past alert transitions (the ``alert_events`` table) for the Alerts tab's history."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from app.records import AlertEvent, Labels, labels_from_json


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows; ``None`` / empty means "any"."""

    since: float | None = None
    rule: str = ""
    severity: str = ""
    state: str = ""
    session_id: int | None = None
    limit: int = 500


def alert_history(conn: sqlite3.Connection, where: HistoryFilter) -> list[AlertEvent]:
    """Matching transitions, newest first (at most ``where.limit``)."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("rule", where.rule), ("severity", where.severity), ("state", where.state)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.since is not None:
        clauses.append("ts >= ?")
        params.append(where.since)
    if where.session_id is not None:
        clauses.append("session_id = ?")
        params.append(where.session_id)
    sql = ("SELECT rule, state, severity, ts, labels, value, message FROM alert_events"
           + (" WHERE " + " AND ".join(clauses) if clauses else "")
           + " ORDER BY ts DESC, id DESC LIMIT ?")
    rows = conn.execute(sql, [*params, where.limit]).fetchall()
    return [AlertEvent(rule, state, severity, ts, labels_from_json(labels or "{}"), value, message or "")
            for rule, state, severity, ts, labels, value, message in rows]


def last_event_id(conn: sqlite3.Connection) -> int:
    """The newest row's id: the history redraws only when this changes."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0])


@dataclass(frozen=True)
class AlertState:
    """The last known state of one alert (rule, labels) in the store, for a restart."""

    rule: str
    labels: Labels
    state: str                   # "pending", "firing" or "resolved"
    ts: float                    # when it entered that state
    since: float                 # when its condition became true (firing/pending), else ts
    last_fired: float | None     # its last firing, for the cooldown
    acknowledged: bool           # acknowledged after its last firing
    value: float | None
    message: str


def last_states(conn: sqlite3.Connection) -> list[AlertState]:
    """Every alert's last state: what the engine takes up when llmmon starts again."""
    last = conn.execute(
        "SELECT id, rule, labels, state, ts, value, message FROM alert_events WHERE id IN "
        "(SELECT max(id) FROM alert_events WHERE state IN ('pending', 'firing', 'resolved') "
        "GROUP BY rule, labels)").fetchall()
    out = []
    for row_id, rule, labels, state, ts, value, message in last:
        last_fired = conn.execute("SELECT max(ts) FROM alert_events WHERE rule = ? AND labels = ? "
                                  "AND state = 'firing'", (rule, labels)).fetchone()[0]
        since = ts
        acknowledged = False
        if state == "firing":
            # The condition held since the first pending/firing event after the last resolution.
            since = conn.execute(
                "SELECT min(ts) FROM alert_events WHERE rule = ? AND labels = ? AND state IN ('pending', 'firing') "
                "AND id > coalesce((SELECT max(id) FROM alert_events WHERE rule = ? AND labels = ? "
                "AND state = 'resolved' AND id < ?), 0)", (rule, labels, rule, labels, row_id)).fetchone()[0]
            acknowledged = conn.execute(
                "SELECT 1 FROM alert_events WHERE rule = ? AND labels = ? AND state = 'acknowledged' AND id > ?",
                (rule, labels, row_id)).fetchone() is not None
        out.append(AlertState(rule, labels_from_json(labels or "{}"), state, ts, since, last_fired, acknowledged,
                              value, message or ""))
    return out
