"""The one SQLite file: a single writer thread that batches inserts, sessions, retention.

Everything that writes goes through the writer thread's queue, so the database has exactly one
writer and ordering is preserved (records queued before a session switch land in the old
session). Readers (charts, session browser, export) open their own read-only connections
with :meth:`Store.reader`. When a write fails (database locked, disk full) the batch is kept
and retried, the failure is visible in :attr:`Store.status`, and nothing already committed
is touched: each batch is one transaction. A record that cannot be stored (see
:mod:`app.storage.rows`) is dropped and counted in :attr:`Store.status`, never the batch and never
the writer; if the writer stops anyway, :attr:`Store.failure` says why. A file llmmon must not
use raises :class:`~app.storage.schema.DatabaseRefused` with the message for the user. Sessions
a crash left "recording" are closed when the file is next opened, at their last record.

>>> import tempfile
>>> folder = tempfile.TemporaryDirectory()
>>> store = Store(Path(folder.name) / "example.db"); store.start()
>>> store.put([Sample("cpu_percent", 12.5, time.time())])
>>> store.close()  # flushes, ends the session, joins the thread
>>> conn = store.reader(); conn.execute("SELECT value FROM samples").fetchall()
[(12.5,)]
>>> conn.close(); folder.cleanup()
"""
from __future__ import annotations

import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil
import sqlite_utils

from app.faults import Faults
from app.records import Health, Labels, Record, Sample, clean_text, labels_json
from app.storage.retention import DAY, delete_older_than, trim_to_size
from app.storage.rows import Rejected, Row, SampleRow, row_of, sample_row
from app.storage.schema import DatabaseRefused, check_schema, migrate, problem_of

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What the GUI shows about the database: is writing working, how much is waiting, what
    was dropped and why (``drops``: ``"3 sample value is not a finite number, ..."``)."""

    ok: bool = True
    error: str = ""
    pending_rows: int = 0
    dropped_rows: int = 0
    written_rows: int = 0
    drops: str = ""
    stopped: bool = False   # the writer thread is gone: nothing more will be written


@dataclass(slots=True)
class _Command:
    fn: Callable[[sqlite_utils.Database], Any]
    future: Future[Any]


class _Unwritten(Exception):
    """The database (not a record) refused a write: these rows are kept for a retry."""

    def __init__(self, exc: sqlite3.Error, rows: list[Row]) -> None:
        super().__init__(str(exc))
        self.exc, self.rows = exc, rows


_STOP = object()
_MAX_CLEAN_KEYS = 100_000  # the fast path's memory of series: beyond, it starts over


def connect(path: Path | str, *, readonly: bool = False, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection configured the way every llmmon connection is (WAL, busy timeout)."""
    if readonly:
        return sqlite3.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True,
                               check_same_thread=False, timeout=busy_timeout_s)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout_s)
    try:
        _configure_for_writing(conn)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _configure_for_writing(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against application crashes (kill -9); only an OS
    # crash can lose the last transactions, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")


def _database_level(exc: BaseException) -> bool:
    """True when the database itself failed (locked, full, I/O, damaged): keep and retry. Other
    errors (a value SQLite cannot bind, a bug) belong to one record."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


class Store:
    """Owns the SQLite file and its single writer thread.

    Args:
        path: the database file; created (with its directory) when missing.
        flush_interval: the longest a record waits in memory before it is committed.
        batch_rows: commit early when this many rows are waiting.
        retention_days: delete data older than this, in the background; ``None`` keeps all.
        retention_max_bytes: also delete the oldest data while the file uses more than this.
        max_pending_rows: beyond this many unwritten rows (writes failing for a long time)
            the oldest are dropped and counted, so memory stays bounded.
        busy_timeout_s: how long a write waits for another program's lock before the batch is
            kept for a later retry.

    Raises:
        DatabaseRefused: the file is damaged, not a database, another program's, or from a
            newer llmmon; its message is what the user is shown. Nothing in the file changed.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval: float = 1.0,
        batch_rows: int = 50_000,
        retention_days: float | None = None,
        retention_max_bytes: int | None = None,
        retention_check_s: float = 3600.0,
        max_pending_rows: int = 2_000_000,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.batch_rows = batch_rows
        self.retention_days = retention_days
        self.retention_max_bytes = retention_max_bytes
        self.retention_check_s = retention_check_s
        self.max_pending_rows = max_pending_rows
        self.clock = clock
        self.session_id: int | None = None
        self.faults = Faults("store writer")  # the records dropped, by why
        self.nulled = Faults("store writer", log, logging.WARNING)  # fields stored as NULL, by why
        self._status = StoreStatus()
        self._failure = ""
        self._queue: queue.SimpleQueue[list[Record] | _Command | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._series_ids: dict[tuple[str, Labels], int] = {}
        self._clean_keys: dict[tuple[str, Labels], tuple[str, Labels]] = {}  # raw → clean name, labels
        self._db = self._open(busy_timeout_s)

    def _open(self, busy_timeout_s: float) -> sqlite_utils.Database:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseRefused(self.path, f"its folder cannot be created ({exc.strerror or exc})") from None
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=busy_timeout_s)
        except sqlite3.Error as exc:
            raise DatabaseRefused(self.path, problem_of(exc)) from None
        db = sqlite_utils.Database(conn)
        try:
            check_schema(db, self.path)  # before anything writes: a refused file stays as it was
            _configure_for_writing(conn)
            migrate(db, path=self.path)
            close_interrupted_sessions(db)
        except DatabaseRefused:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise DatabaseRefused(self.path, problem_of(exc)) from None
        return db

    # ----------------------------------------------------------------- lifecycle
    def start(self, *, new_session: bool = True, session_name: str = "") -> None:
        """Start the writer thread; by default open a new session for this run.

        Raises:
            DatabaseRefused: the file could not take the new session (damaged past its first pages).
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="llmmon-store", daemon=True)
        self._thread.start()
        if new_session:
            try:
                self.begin_session(session_name)
            except sqlite3.Error as exc:
                self.close()
                raise DatabaseRefused(self.path, problem_of(exc)) from None

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, end the session, stop and join the writer thread. Returns
        at once when the writer already died (what it had not written is lost and counted)."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            if self.session_id is not None:
                try:
                    self.end_session()
                except Exception as exc:  # the writer died meanwhile, or the database failed
                    log.error("could not end the session: %s", exc)
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("store writer did not stop within %.0f s", timeout)
        self._thread = None
        self._db.conn.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> str:
        """Why the writer thread stopped while it should run; ``""`` while all is well."""
        return self._failure

    @property
    def status(self) -> StoreStatus:
        s = self._status
        drops = ", ".join(x for x in (self.faults.summary(), self.nulled.summary()) if x)
        if self._failure:
            return replace(s, ok=False, error=self._failure, stopped=True,
                           dropped_rows=self.faults.total, drops=drops)
        return replace(s, dropped_rows=self.faults.total, drops=drops)

    # ----------------------------------------------------------------- producers
    def put(self, records: Iterable[Record]) -> None:
        """Queue records for writing. Thread-safe, never blocks, never raises."""
        batch = [r for r in records if not isinstance(r, Health)]
        if not batch:
            return
        if self._failure:
            self.faults.record("record arrived after the writer stopped", n=len(batch))
        else:
            self._queue.put(batch)

    def call(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        """Run ``fn(db)`` on the writer thread after everything queued so far is written."""
        future: Future[T] = Future()
        if not self.running:
            future.set_exception(RuntimeError(self._failure or "store is not running"))
        else:
            self._queue.put(_Command(fn, future))
        return future

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything queued before this call is committed (or failed)."""
        self.call(lambda db: None).result(timeout)

    def reader(self) -> sqlite3.Connection:
        """A new read-only connection for the calling thread (charts, export, browser)."""
        return connect(self.path, readonly=True)

    # ----------------------------------------------------------------- sessions
    def begin_session(self, name: str = "") -> int:
        """End the open session (if any) and start a new one; returns its id."""
        def op(db: sqlite_utils.Database) -> int:
            now = self.clock()
            with db.atomic():
                if self.session_id is not None:
                    db.execute("UPDATE sessions SET ended=? WHERE id=? AND ended IS NULL",
                               [now, self.session_id])
                sid = db.table("sessions").insert(
                    {"name": clean_text(name) or time.strftime("Session %Y-%m-%d %H:%M", time.localtime(now)),
                     "started": now, "ended": None, "host": socket.gethostname(), "note": "",
                     "pid": os.getpid()}
                ).last_pk
            assert sid is not None, "insert() sets last_pk"
            self.session_id = int(sid)
            return self.session_id
        return self.call(op).result(30)

    def end_session(self) -> None:
        def op(db: sqlite_utils.Database) -> None:
            if self.session_id is not None:
                db.execute("UPDATE sessions SET ended=? WHERE id=? AND ended IS NULL",
                           [self.clock(), self.session_id])
                self.session_id = None
        self.call(op).result(30)

    # ----------------------------------------------------------------- writer thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the user must see it
            self._failure = f"the database writer stopped ({type(exc).__name__}: {exc}); nothing more is recorded"
            log.error("%s", self._failure)
            log.info("traceback of the writer's stop", exc_info=exc)
        finally:
            self._fail_waiting_commands()

    def _fail_waiting_commands(self) -> None:
        """Nobody waits forever on a writer that is gone (``close`` must not hang)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Command):
                item.future.set_exception(RuntimeError(self._failure or "store is closed"))
            elif isinstance(item, list) and self._failure:
                self.faults.record("record arrived after the writer stopped", n=len(item))

    def _loop(self) -> None:
        pending: list[Row] = []
        deadline = float("inf")
        next_retention = time.monotonic()
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else self.flush_interval
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if isinstance(item, list):
                    if not pending:
                        deadline = time.monotonic() + self.flush_interval
                    pending.extend(self._rows(item))
                    if len(pending) < self.batch_rows:
                        continue
                if pending and (item is not None or time.monotonic() >= deadline):
                    pending = self._write_or_keep(pending)
                    deadline = time.monotonic() + self.flush_interval
                if isinstance(item, _Command):
                    self._run_command(item)
                elif item is _STOP:
                    if pending:
                        log.error("store closing with %d unwritten rows: %s", len(pending), self._status.error)
                    return
                if (self.retention_days is not None or self.retention_max_bytes) \
                        and time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + self.retention_check_s
                    self._retention()
            except Exception as exc:  # a bug in this loop must not end the recording
                self.faults.record(f"{type(exc).__name__} in the writer loop", exc)
                deadline = time.monotonic() + self.flush_interval  # no busy loop on a repeat

    def _rows(self, records: list[Record]) -> list[Row]:
        """Rows for the records (see :mod:`app.storage.rows`); the unstorable ones are counted.

        Samples of a series already seen with plain float values take a fast path (tens of
        thousands a second): their cleaned name and labels are remembered per series."""
        out: list[Row] = []
        keys = self._clean_keys
        for record in records:
            try:
                if type(record) is Sample and type(record.value) is float and type(record.ts) is float \
                        and math.isfinite(record.value) and math.isfinite(record.ts):
                    key = keys.get((record.name, record.labels))
                    if key is None:
                        if len(keys) >= _MAX_CLEAN_KEYS:
                            keys.clear()
                        name, labels, _, _ = sample_row(record)
                        key = keys[(record.name, record.labels)] = (name, labels)
                    out.append(("samples", (key[0], key[1], record.ts, record.value)))
                else:
                    out.append(row_of(record, self.nulled.record))
            except Rejected as exc:
                self.faults.record(str(exc), detail=repr(record)[:300])
            except Exception as exc:
                self.faults.record(f"{type(exc).__name__} reading a record", exc, repr(record)[:300])
        return out

    def _retention(self) -> None:
        try:
            if self.retention_days is not None:
                self.apply_retention_now(self.retention_days)
            if self.retention_max_bytes:
                trim_to_size(self._db.conn, self.retention_max_bytes, self.clock(), self.apply_retention_now)
        except Exception as exc:
            self._rollback()
            log.warning("background retention failed, retried at the next check: %s", exc)

    def _run_command(self, cmd: _Command) -> None:
        try:
            cmd.future.set_result(cmd.fn(self._db))
        except BaseException as exc:  # the caller gets the error, the thread lives on
            self._rollback()
            cmd.future.set_exception(exc)

    def _rollback(self) -> None:
        self._db.rollback()
        self._series_ids.clear()  # ids cached during the rolled-back transaction may not exist

    def _write_or_keep(self, pending: list[Row]) -> list[Row]:
        """Write the batch; on a database failure keep what is unwritten (bounded) for later."""
        if self.session_id is None:  # the user stopped the session: live views only, no rows
            return []
        try:
            self._write_isolating(pending)
        except _Unwritten as failed:
            pending = failed.rows
            dropped = max(0, len(pending) - self.max_pending_rows)
            if dropped:
                pending = pending[dropped:]
                self.faults.record("rows dropped: database writes failing for too long", n=dropped)
            if self._status.ok:
                log.error("database write failed, will retry: %s", failed.exc)
            self._status = StoreStatus(ok=False, error=_describe(failed.exc), pending_rows=len(pending),
                                       written_rows=self._status.written_rows)
            return pending
        if not self._status.ok:
            log.info("database writes resumed")
        self._status = StoreStatus(ok=True, written_rows=self._status.written_rows)
        return []

    def _write_isolating(self, rows: list[Row]) -> None:
        """Write ``rows`` in one transaction. If one row makes it fail (a bug: rows are made
        safe to bind), split the batch in halves until that row is alone, drop and count it,
        and write the rest. A database-level failure raises :class:`_Unwritten` with every row
        not yet committed."""
        try:
            self._write(rows)
        except Exception as exc:
            self._rollback()
            if _database_level(exc):
                raise _Unwritten(exc, rows) from exc  # type: ignore[arg-type]
            if len(rows) == 1:
                self.faults.record(f"{type(exc).__name__} writing a row", exc, repr(rows[0])[:300])
                return
            mid = len(rows) // 2
            try:
                self._write_isolating(rows[:mid])
            except _Unwritten as failed:
                raise _Unwritten(failed.exc, failed.rows + rows[mid:]) from exc
            self._write_isolating(rows[mid:])
            return
        self._status = replace(self._status, written_rows=self._status.written_rows + len(rows))

    def _write(self, rows: list[Row]) -> None:
        sid = self.session_id
        samples: list[tuple[int | None, int, float, float]] = []
        dicts: dict[str, list[dict[str, Any]]] = {"requests": [], "events": [], "alert_events": []}
        with self._db.atomic():
            for table, row in rows:
                if table == "samples":
                    name, labels, ts, value = cast(SampleRow, row)
                    samples.append((sid, self._series_id(name, labels), ts, value))
                else:
                    dicts[table].append({**row, "session_id": sid})  # type: ignore[dict-item]
            # Samples are the hot path (tens of thousands a second in bursts): a plain
            # executemany is ~2.5x faster than sqlite-utils' dict-based insert_all here.
            self._db.conn.executemany(
                "INSERT INTO samples (session_id, series_id, ts, value) VALUES (?,?,?,?)", samples)
            for table, table_rows in dicts.items():
                if table_rows:
                    self._db.table(table).insert_all(table_rows)

    def _series_id(self, name: str, labels: Labels) -> int:
        key = (name, labels)
        sid = self._series_ids.get(key)
        if sid is None:
            text = labels_json(labels)
            self._db.conn.execute(
                "INSERT OR IGNORE INTO series (name, labels) VALUES (?, ?)", (name, text))
            sid = self._db.conn.execute(
                "SELECT id FROM series WHERE name=? AND labels=?", (name, text)).fetchone()[0]
            self._series_ids[key] = sid
        return sid

    # ----------------------------------------------------------------- retention
    def set_retention(self, days: float | None, max_bytes: int | None) -> Future[None] | None:
        """Use new limits (``None``: no limit) and apply them now on the writer thread rather
        than at the next hourly check; returns that pass's future (``None`` when not running)."""
        self.retention_days, self.retention_max_bytes = days, max_bytes
        if not self.running or (days is None and not max_bytes):
            return None
        return self.call(lambda db: self._retention())

    def apply_retention(self, keep_days: float) -> Future[int]:
        """Delete samples, requests, events and ended sessions older than ``keep_days``."""
        return self.call(lambda db: self.apply_retention_now(keep_days))

    def apply_retention_now(self, keep_days: float) -> int:
        """Retention on the writer thread; returns the number of rows deleted."""
        deleted = delete_older_than(self._db, self.clock() - keep_days * DAY)
        if deleted:
            log.info("retention: deleted %d rows older than %.1f days", deleted, keep_days)
        return deleted


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database is locked by another program ({text}); retrying"
    if "full" in text:
        return f"disk is full ({text}); data is kept in memory and retried"
    if "malformed" in text or "corrupt" in text:
        return (f"the database file is damaged ({text}); data is kept in memory: quit, move the "
                "file aside and start again")
    return text


def close_interrupted_sessions(db: sqlite_utils.Database, slack_s: float = 300.0) -> list[int]:
    """End the sessions a crash (kill -9, power loss) left "recording", at their last record.

    A session is left over when it has no end and the process that recorded it is gone: same
    host, and its pid is not running, or runs a program started after the session (the pid was
    reused). Sessions of another host, or of an llmmon still running here, are left alone.
    Returns the ids closed.
    """
    host, closed = socket.gethostname(), []
    rows = db.execute("SELECT id, started, host, pid FROM sessions WHERE ended IS NULL ORDER BY started").fetchall()
    for sid, started, session_host, pid in rows:
        if session_host != host or _recording(pid, started, slack_s):
            continue
        later = db.execute("SELECT min(started) FROM sessions WHERE started > ?", [started]).fetchone()[0]
        end = _last_record(db.conn, sid, started - slack_s, math.inf if later is None else later + slack_s)
        with db.atomic():
            db.execute("UPDATE sessions SET ended=? WHERE id=? AND ended IS NULL",
                       [max(started, end if end is not None else started), sid])
        closed.append(sid)
        log.warning("session %d was left recording by a crash: closed at its last record", sid)
    return closed


def _recording(pid: int | None, started: float, slack_s: float) -> bool:
    """Is the process that began a session at ``started`` still running?"""
    if pid is None:
        return False  # recorded by an llmmon from before sessions knew their process
    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).create_time() <= started + slack_s
    except (psutil.Error, OSError):
        return False


def _last_record(conn: sqlite3.Connection, session_id: int, low: float, high: float) -> float | None:
    """The time of a session's last sample, request end, event or alert (indexed reads only:
    per series, the newest sample inside the window that belongs to the session)."""
    found = []
    for (series_id,) in conn.execute("SELECT id FROM series").fetchall():
        row = conn.execute("SELECT ts FROM samples WHERE series_id=? AND ts BETWEEN ? AND ? AND session_id=? "
                           "ORDER BY ts DESC LIMIT 1", (series_id, low, high, session_id)).fetchone()
        if row:
            found.append(row[0])
    found += [conn.execute("SELECT max(ts_start + COALESCE(latency_s, 0)) FROM requests WHERE session_id=?",
                           (session_id,)).fetchone()[0],
              conn.execute("SELECT max(ts) FROM events WHERE session_id=?", (session_id,)).fetchone()[0],
              conn.execute("SELECT max(ts) FROM alert_events WHERE session_id=?", (session_id,)).fetchone()[0]]
    found = [t for t in found if t is not None]
    return max(found) if found else None
