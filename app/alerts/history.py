"""Reading past alert transitions (the ``alert_events`` table) for the Alerts tab's history."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from app.records import AlertEvent, labels_from_json


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
