"""The one SQLite file: a single writer thread that batches inserts, sessions, retention.

Everything that writes goes through the writer thread's queue, so the database has exactly one
writer and ordering is preserved (records queued before a session switch land in the old
session). Readers (charts, session browser, export) open their own read-only connections
with :meth:`Store.reader`. When a write fails (database locked, disk full) the batch is kept
and retried, the failure is visible in :attr:`Store.status`, and nothing already committed
is touched: each batch is one transaction.

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
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from app.records import AlertEvent, Event, Health, Labels, Record, RequestRecord, Sample, labels_json
from app.storage.retention import DAY, delete_older_than, trim_to_size
from app.storage.schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What the GUI shows about the database: is writing working, how much is waiting."""

    ok: bool = True
    error: str = ""
    pending_rows: int = 0
    dropped_rows: int = 0
    written_rows: int = 0


@dataclass(slots=True)
class _Command:
    fn: Callable[[sqlite_utils.Database], Any]
    future: Future[Any]


_STOP = object()


def connect(path: Path | str, *, readonly: bool = False, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection configured the way every llmmon connection is (WAL, busy timeout)."""
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True,
                               check_same_thread=False, timeout=busy_timeout_s)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout_s)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against application crashes (kill -9); only an OS
        # crash can lose the last transactions, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self.batch_rows = batch_rows
        self.retention_days = retention_days
        self.retention_max_bytes = retention_max_bytes
        self.retention_check_s = retention_check_s
        self.max_pending_rows = max_pending_rows
        self.clock = clock
        self.session_id: int | None = None
        self.status = StoreStatus()
        self._queue: queue.SimpleQueue[list[Record] | _Command | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._series_ids: dict[tuple[str, Labels], int] = {}
        self._db = sqlite_utils.Database(connect(self.path, busy_timeout_s=busy_timeout_s))
        migrate(self._db)

    # ----------------------------------------------------------------- lifecycle
    def start(self, *, new_session: bool = True, session_name: str = "") -> None:
        """Start the writer thread; by default open a new session for this run."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="llmmon-store", daemon=True)
        self._thread.start()
        if new_session:
            self.begin_session(session_name)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, end the session, stop and join the writer thread."""
        if self._thread is None:
            return
        if self.session_id is not None:
            self.end_session()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("store writer did not stop within %.0f s", timeout)
        self._thread = None
        self._db.conn.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ----------------------------------------------------------------- producers
    def put(self, records: Iterable[Record]) -> None:
        """Queue records for writing. Thread-safe, never blocks, never raises."""
        batch = [r for r in records if not isinstance(r, Health)]
        if batch:
            self._queue.put(batch)

    def call(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        """Run ``fn(db)`` on the writer thread after everything queued so far is written."""
        future: Future[T] = Future()
        if self._thread is None:
            future.set_exception(RuntimeError("store is not running"))
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
                    {"name": name or time.strftime("Session %Y-%m-%d %H:%M", time.localtime(now)),
                     "started": now, "ended": None, "host": socket.gethostname(), "note": ""}
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
        pending: list[Record] = []
        deadline = float("inf")
        next_retention = time.monotonic()
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else self.flush_interval
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, list):
                if not pending:
                    deadline = time.monotonic() + self.flush_interval
                pending.extend(item)
                if len(pending) < self.batch_rows:
                    continue
            if pending and (item is not None or time.monotonic() >= deadline):
                pending = self._write_or_keep(pending)
                deadline = time.monotonic() + self.flush_interval
            if isinstance(item, _Command):
                self._run_command(item)
            elif item is _STOP:
                if pending:
                    log.error("store closing with %d unwritten rows: %s", len(pending),
                              self.status.error)
                return
            if (self.retention_days is not None or self.retention_max_bytes) \
                    and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + self.retention_check_s
                self._retention_pass()

    def _retention_pass(self) -> None:
        days, max_bytes = self.retention_days, self.retention_max_bytes
        if days is not None:
            self._guarded(lambda: self.apply_retention_now(days))
        if max_bytes:
            self._guarded(lambda: trim_to_size(self._db.conn, max_bytes, self.clock(), self.apply_retention_now))

    def _run_command(self, cmd: _Command) -> None:
        try:
            cmd.future.set_result(cmd.fn(self._db))
        except BaseException as exc:  # the caller gets the error, the thread lives on
            self._db.rollback()
            cmd.future.set_exception(exc)

    def _guarded(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except sqlite3.Error as exc:
            self._db.rollback()
            log.warning("background database task failed: %s", exc)

    def _write_or_keep(self, pending: list[Record]) -> list[Record]:
        """Write the batch; on failure keep it (bounded) for the next attempt."""
        if self.session_id is None:  # the user stopped the session: live views only, no rows
            return []
        try:
            self._write(pending)
        except sqlite3.Error as exc:
            self._db.rollback()
            dropped = max(0, len(pending) - self.max_pending_rows)
            if dropped:
                pending = pending[dropped:]
            if self.status.ok:
                log.error("database write failed, will retry: %s", exc)
            self.status = StoreStatus(
                ok=False, error=_describe(exc), pending_rows=len(pending),
                dropped_rows=self.status.dropped_rows + dropped,
                written_rows=self.status.written_rows)
            return pending
        if not self.status.ok:
            log.info("database writes resumed")
        self.status = StoreStatus(
            ok=True, pending_rows=0, dropped_rows=self.status.dropped_rows,
            written_rows=self.status.written_rows + len(pending))
        return []

    def _write(self, batch: list[Record]) -> None:
        sid = self.session_id
        samples: list[tuple[int | None, int, float, float]] = []
        requests: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        with self._db.atomic():
            for r in batch:
                if isinstance(r, Sample):
                    samples.append((sid, self._series_id(r.name, r.labels), r.ts, r.value))
                elif isinstance(r, RequestRecord):
                    row = asdict(r)
                    row["session_id"] = sid
                    requests.append(row)
                elif isinstance(r, Event):
                    events.append({"session_id": sid, "ts": r.ts, "kind": r.kind,
                                   "source": r.source, "message": r.message,
                                   "labels": labels_json(r.labels)})
                elif isinstance(r, AlertEvent):
                    alerts.append({"session_id": sid, "ts": r.ts, "rule": r.rule,
                                   "state": r.state, "severity": r.severity,
                                   "labels": labels_json(r.labels), "value": r.value,
                                   "message": r.message})
            # Samples are the hot path (tens of thousands a second in bursts): a plain
            # executemany is ~2.5x faster than sqlite-utils' dict-based insert_all here.
            self._db.conn.executemany(
                "INSERT INTO samples (session_id, series_id, ts, value) VALUES (?,?,?,?)", samples)
            for table, rows in (("requests", requests), ("events", events), ("alert_events", alerts)):
                if rows:
                    self._db.table(table).insert_all(rows)

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
    return text
