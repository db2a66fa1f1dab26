"""Recording sessions: what each one holds, editing and deleting them, and retention by age or
by database size with a preview of what the next clean-up will remove.

Reads take any connection on the file (normally :meth:`app.storage.store.Store.reader`), so the
session browser can run them on a worker thread. Writes (rename, note, delete, size-based
trimming) run on the store's writer thread through :meth:`app.storage.store.Store.call`, after
everything queued before them is written. Starting and stopping a session are
:meth:`Store.begin_session` and :meth:`Store.end_session`.

Samples are found per series with the ``(series_id, ts)`` index inside a session's time
window (its start to its end, widened by :data:`CLOCK_SLACK_S` because a sample is stamped
when it was polled, which can be a little before the session that stores it began).

>>> import tempfile
>>> from pathlib import Path
>>> from app.records import Sample
>>> from app.storage.store import Store
>>> folder = tempfile.TemporaryDirectory()
>>> store = Store(Path(folder.name) / "example.db"); store.start(session_name="yesterday's benchmark")
>>> store.put([Sample("cpu_percent", 12.5, store.clock())]); store.begin_session("today")
2
>>> conn = store.reader()
>>> [s.name for s in list_sessions(conn)]
['today', "yesterday's benchmark"]
>>> delete_session(store, 1).result()   # rows deleted
1
>>> conn.close(); store.close(); folder.cleanup()
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

if TYPE_CHECKING:  # the store imports this module for size retention
    from app.storage.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
GB = 1_000_000_000
CLOCK_SLACK_S = 300.0
"""How far outside its session's start/end a sample's timestamp may lie (it is stamped when
polled; a slow poll can straddle a session switch)."""
SIZE_TARGET_RATIO = 0.9
"""Size retention trims to this share of the cap, so it does not run again at every check."""
_TABLES = ("samples", "requests", "events", "alert_events")


class SessionError(RuntimeError):
    """A session edit that cannot be done (no such session, deleting the one recording)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One row of the session browser.

    ``samples`` counts the samples stored inside the session's time window and ``approx_bytes``
    estimates the database space its rows use (average row size per table × its rows).
    """

    id: int
    name: str
    note: str
    host: str
    started: float
    ended: float | None
    servers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    samples: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    alerts_fired: int = 0
    approx_bytes: int = 0

    @property
    def recording(self) -> bool:
        return self.ended is None

    def duration(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


@dataclass(frozen=True, slots=True)
class DbUsage:
    """How much of the database file holds data, and the average row size of each table."""

    file_bytes: int
    used_bytes: int
    bytes_per_row: dict[str, float]


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

    def effect(self, session: SessionInfo) -> str:
        """``"all"``, ``"part"`` (its data before the cutoff) or ``""`` for one session."""
        if self.cutoff is None or session.started >= self.cutoff:
            return ""
        if session.ended is not None and session.ended < self.cutoff:
            return "all"
        return "part"


# ------------------------------------------------------------------------------------ reads
def session_window(started: float, ended: float | None, now: float | None = None) -> tuple[float, float]:
    """The timestamps a session's samples can carry: ``(low, high)`` including the slack."""
    end = ended if ended is not None else (now if now is not None else time.time())
    return started - CLOCK_SLACK_S, end + CLOCK_SLACK_S


def resolve_session(conn: sqlite3.Connection, ref: str | int) -> int:
    """A session id from ``"latest"`` (the most recently started) or an id; raises SessionError."""
    if str(ref).strip().lower() == "latest":
        row = conn.execute("SELECT id FROM sessions ORDER BY started DESC, id DESC LIMIT 1").fetchone()
        if row is None:
            raise SessionError("the database has no sessions yet")
        return int(row[0])
    try:
        sid = int(ref)
    except ValueError:
        raise SessionError(f"session must be a number or 'latest', not {ref!r}") from None
    if conn.execute("SELECT 1 FROM sessions WHERE id=?", (sid,)).fetchone() is None:
        raise SessionError(f"no session {sid} in this database")
    return sid


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
    rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES}
    table_bytes = _table_bytes(conn)
    if table_bytes is None:  # SQLite built without dbstat: share the used bytes evenly per row
        per = used / max(1, sum(rows.values()))
        per_row = {t: per for t in _TABLES}
    else:
        per_row = {t: table_bytes.get(t, 0) / rows[t] if rows[t] else 0.0 for t in _TABLES}
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


def list_sessions(conn: sqlite3.Connection, now: float | None = None,
                  usage: DbUsage | None = None) -> list[SessionInfo]:
    """Every session, newest first, with what it recorded (see :class:`SessionInfo`)."""
    now = time.time() if now is None else now
    usage = usage or db_usage(conn)
    requests = {sid: (n, int(p), int(c)) for sid, n, p, c in conn.execute(
        "SELECT session_id, count(*), total(prompt_tokens), total(completion_tokens) "
        "FROM requests GROUP BY session_id")}
    seen_servers: dict[int, set[str]] = {}
    seen_models: dict[int, set[str]] = {}
    for sid, server, model in conn.execute("SELECT DISTINCT session_id, server, model FROM requests"):
        seen_servers.setdefault(sid, set()).add(server)
        if model:
            seen_models.setdefault(sid, set()).add(model)
    alerts = dict(conn.execute(
        "SELECT session_id, count(*) FROM alert_events WHERE state='firing' GROUP BY session_id"))
    other_rows = {t: dict(conn.execute(f"SELECT session_id, count(*) FROM {t} GROUP BY session_id"))
                  for t in ("events", "alert_events")}
    series = [(i, json.loads(labels)) for i, labels in conn.execute("SELECT id, labels FROM series")]
    out = []
    for sid, name, note, host, started, ended in conn.execute(
            "SELECT id, name, note, host, started, ended FROM sessions ORDER BY started DESC, id DESC"
    ).fetchall():
        end = ended if ended is not None else now
        n_samples = 0
        for series_id, labels in series:
            # Index-only count over the session's own start..end: cheap, and exact unless two
            # programs recorded into the same file at the same time.
            n = conn.execute("SELECT count(*) FROM samples WHERE series_id=? AND ts BETWEEN ? AND ?",
                             (series_id, started, end)).fetchone()[0]
            if n:
                n_samples += n
                if "server" in labels:
                    seen_servers.setdefault(sid, set()).add(labels["server"])
                if "model" in labels:
                    seen_models.setdefault(sid, set()).add(labels["model"])
        n_req, prompt, completion = requests.get(sid, (0, 0, 0))
        size = (n_samples * usage.bytes_per_row["samples"] + n_req * usage.bytes_per_row["requests"]
                + sum(other_rows[t].get(sid, 0) * usage.bytes_per_row[t] for t in other_rows))
        out.append(SessionInfo(
            id=sid, name=name or "", note=note or "", host=host or "", started=started, ended=ended,
            servers=tuple(sorted(seen_servers.get(sid, ()))), models=tuple(sorted(seen_models.get(sid, ()))),
            samples=n_samples, requests=n_req, prompt_tokens=prompt, completion_tokens=completion,
            alerts_fired=alerts.get(sid, 0), approx_bytes=int(size)))
    return out


# ------------------------------------------------------------------------------- retention
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


# ---------------------------------------------------------------------------------- writes
def rename_session(store: Store, session_id: int, name: str) -> Future[None]:
    return store.call(lambda db: _update(db, session_id, "name", name.strip()))


def set_session_note(store: Store, session_id: int, note: str) -> Future[None]:
    return store.call(lambda db: _update(db, session_id, "note", note))


def _update(db: sqlite_utils.Database, session_id: int, column: str, value: str) -> None:
    with db.atomic():
        if db.execute(f"UPDATE sessions SET {column}=? WHERE id=?", [value, session_id]).rowcount == 0:
            raise SessionError(f"no session {session_id}")


def delete_session(store: Store, session_id: int) -> Future[int]:
    """Delete one session and its rows in every table (nothing else); returns rows deleted.

    Refuses the session being recorded. Series definitions stay: other sessions share them.
    """
    def op(db: sqlite_utils.Database) -> int:
        if session_id == store.session_id:
            raise SessionError("this session is being recorded: stop it or start a new one first")
        row = db.execute("SELECT started, ended FROM sessions WHERE id=?", [session_id]).fetchone()
        if row is None:
            raise SessionError(f"no session {session_id}")
        started, ended = row
        low, high = session_window(started, ended, now=store.clock())
        conn = db.conn
        deleted = 0
        series_ids = [r[0] for r in conn.execute("SELECT id FROM series")]
        for series_id in series_ids:  # one short indexed transaction per series, like retention
            with db.atomic():
                deleted += conn.execute(
                    "DELETE FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? AND session_id=?",
                    (series_id, low, high, session_id)).rowcount
        with db.atomic():
            # Samples stamped outside the window (the clock jumped while recording) are rare;
            # one scan of the table finds them so the session really is gone.
            deleted += conn.execute("DELETE FROM samples NOT INDEXED WHERE session_id=?",
                                    (session_id,)).rowcount
            for table in _TABLES[1:]:
                deleted += conn.execute(f"DELETE FROM {table} WHERE session_id=?", (session_id,)).rowcount
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
        log.info("deleted session %d (%d rows)", session_id, deleted)
        return deleted
    return store.call(op)
