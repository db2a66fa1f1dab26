"""Retention: how much of the database file holds data, and deleting the oldest data by age or
to keep the file under a size cap, with a preview of what the next clean-up will remove.

The deletions run on the store's writer thread (:meth:`app.storage.store.Store.apply_retention`
and the store's periodic check); the reads (:func:`db_usage`, :func:`retention_plan`) take any
connection on the file, so the session browser can run them on a worker thread.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sqlite_utils

log = logging.getLogger(__name__)

DAY = 86400.0
GB = 1_000_000_000
SIZE_TARGET_RATIO = 0.9
"""Size retention trims to this share of the cap, so it does not run again at every check."""
TABLES = ("samples", "requests", "events", "alert_events")
"""The tables whose rows carry a timestamp and a session id."""


@dataclass(frozen=True, slots=True)
class DbUsage:
    """How much of the database file holds data, and the average row size of each table."""

    file_bytes: int
    used_bytes: int
    bytes_per_row: dict[str, float]


class _Span(Protocol):
    """Anything with a start and an (optional) end, like a session."""

    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What the next retention pass will delete: everything stamped before ``cutoff``.

    ``reason`` says which rule sets the cutoff (``"age"`` or ``"size"``); ``cutoff`` is None
    when nothing is due.
    """

    cutoff: float | None
    reason: str
    keep_days: float | None
    max_bytes: int | None
    usage: DbUsage

    def effect(self, session: _Span) -> str:
        """``"all"``, ``"part"`` (its data before the cutoff) or ``""`` for one session."""
        if self.cutoff is None or session.started >= self.cutoff:
            return ""
        if session.ended is not None and session.ended < self.cutoff:
            return "all"
        return "part"



def db_usage(conn: sqlite3.Connection, bytes_per_row: dict[str, float] | None = None) -> DbUsage:
    """File size, bytes in use (free pages excluded) and average bytes per row of each table.

    Measuring the row sizes reads every page (about 0.1 s per 100 MB); pass the previous
    ``bytes_per_row`` to reuse it: it changes slowly.
    """
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    used = (pages - free) * page_size
    if bytes_per_row is not None:
        return DbUsage(file_bytes=pages * page_size, used_bytes=used, bytes_per_row=bytes_per_row)
    rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    table_bytes = _table_bytes(conn)
    if table_bytes is None:  # SQLite built without dbstat: share the used bytes evenly per row
        per = used / max(1, sum(rows.values()))
        per_row = {t: per for t in TABLES}
    else:
        per_row = {t: table_bytes.get(t, 0) / rows[t] if rows[t] else 0.0 for t in TABLES}
    return DbUsage(file_bytes=pages * page_size, used_bytes=used, bytes_per_row=per_row)


def _table_bytes(conn: sqlite3.Connection) -> dict[str, int] | None:
    """Bytes of each table including its indexes, from the ``dbstat`` virtual table."""
    owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table','index')"))
    try:
        stats = conn.execute("SELECT name, sum(pgsize) FROM dbstat('main', 1) GROUP BY name").fetchall()
    except sqlite3.Error:
        return None
    out: dict[str, int] = {}
    for name, size in stats:
        table = owner.get(name, name)
        out[table] = out.get(table, 0) + size
    return out


def oldest_ts(conn: sqlite3.Connection) -> float | None:
    """The oldest timestamp of any sample, request or event (one index probe per series)."""
    found = [row[0] for row in conn.execute(
        "SELECT (SELECT min(ts) FROM samples WHERE series_id=series.id) FROM series")]
    found += [conn.execute("SELECT min(ts_start) FROM requests").fetchone()[0],
              conn.execute("SELECT min(ts) FROM events").fetchone()[0],
              conn.execute("SELECT min(ts) FROM alert_events").fetchone()[0]]
    found = [t for t in found if t is not None]
    return min(found) if found else None


def size_cutoff(conn: sqlite3.Connection, max_bytes: int, now: float,
                used_bytes: int | None = None) -> float | None:
    """The time before which data must go for the database to fit in ``max_bytes``.

    Assumes data arrived at a steady rate since the oldest row: dropping a share ``f`` of the
    bytes means dropping the oldest share ``f`` of the time span. :func:`trim_to_size`
    repeats the estimate when the rate was not steady.
    """
    used = db_usage(conn).used_bytes if used_bytes is None else used_bytes
    if used <= max_bytes:
        return None
    first = oldest_ts(conn)
    if first is None or first >= now:
        return None
    share = (used - SIZE_TARGET_RATIO * max_bytes) / used
    return first + share * (now - first)


def retention_plan(conn: sqlite3.Connection, keep_days: float | None, max_bytes: int | None,
                   now: float | None = None, usage: DbUsage | None = None) -> RetentionPlan:
    """What the next retention pass removes under the user's age and size limits."""
    now = time.time() if now is None else now
    usage = usage or db_usage(conn)
    cutoffs: list[tuple[float, str]] = []
    if keep_days is not None and (first := oldest_ts(conn)) is not None and first < now - keep_days * DAY:
        cutoffs.append((now - keep_days * DAY, "age"))
    if max_bytes and (cut := size_cutoff(conn, max_bytes, now, usage.used_bytes)) is not None:
        cutoffs.append((cut, "size"))
    cutoff, reason = max(cutoffs) if cutoffs else (None, "")
    return RetentionPlan(cutoff, reason, keep_days, max_bytes, usage)


def trim_to_size(conn: sqlite3.Connection, max_bytes: int, now: float,
                 delete_older_than: Callable[[float], int], max_rounds: int = 4) -> int:
    """Delete the oldest data until the database uses at most ``max_bytes``; returns rows deleted.

    ``delete_older_than(keep_days)`` is the store's age retention (it runs on the writer
    thread). Freed pages are reused by new rows, so the file stops growing at the cap.
    """
    deleted = 0
    for _ in range(max_rounds):
        cutoff = size_cutoff(conn, max_bytes, now)
        if cutoff is None:
            break
        removed = delete_older_than((now - cutoff) / DAY)
        deleted += removed
        if not removed:
            break  # what is left is all newer than the cutoff: nothing more to gain
    if deleted:
        log.info("size retention: deleted %d rows to stay under %.2f GB", deleted, max_bytes / GB)
    return deleted


def delete_older_than(db: sqlite_utils.Database, cutoff: float) -> int:
    """Delete samples, requests, events, alert events and ended sessions stamped before
    ``cutoff``; returns the rows deleted. Runs on the store's writer thread."""
    deleted = 0
    conn = db.conn
    series_ids = [row[0] for row in conn.execute("SELECT id FROM series")]
    for series_id in series_ids:  # one short transaction per series keeps readers flowing
        with db.atomic():
            deleted += conn.execute(
                "DELETE FROM samples WHERE series_id=? AND ts<?", (series_id, cutoff)).rowcount
    with db.atomic():
        deleted += conn.execute("DELETE FROM requests WHERE ts_start<?", (cutoff,)).rowcount
        deleted += conn.execute("DELETE FROM events WHERE ts<?", (cutoff,)).rowcount
        deleted += conn.execute("DELETE FROM alert_events WHERE ts<?", (cutoff,)).rowcount
        conn.execute("DELETE FROM sessions WHERE ended IS NOT NULL AND ended<?", (cutoff,))
    return deleted
