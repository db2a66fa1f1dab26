"""Recording sessions: what each one holds, editing and deleting them (retention by age or size
is in :mod:`app.storage.retention`).

Reads take any connection on the file (normally :meth:`app.storage.store.Store.reader`), so the
session browser can run them on a worker thread. Writes (rename, note, delete) run on the
store's writer thread through :meth:`app.storage.store.Store.call`, after everything queued
before them is written. Starting and stopping a session are
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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

from app.storage.retention import TABLES, DbUsage, db_usage

if TYPE_CHECKING:
    from app.storage.store import Store

log = logging.getLogger(__name__)

CLOCK_SLACK_S = 300.0
"""How far outside its session's start/end a sample's timestamp may lie (it is stamped when
polled; a slow poll can straddle a session switch)."""


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
            for table in TABLES[1:]:
                deleted += conn.execute(f"DELETE FROM {table} WHERE session_id=?", (session_id,)).rowcount
            conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
        log.info("deleted session %d (%d rows)", session_id, deleted)
        return deleted
    return store.call(op)
