"""Export one session to CSV files that a spreadsheet or a notebook opens directly.

A folder gets five files, each UTF-8 with a byte-order mark (so Excel detects UTF-8) and a
header row; every row carries its time twice in ISO 8601, ``ts_utc`` (``…Z``) and ``ts_local``
(the machine's zone at that instant, with its offset, e.g. ``+02:00``):

``samples.csv``
    Long form, one row per stored sample, in the order they were recorded:
    ``ts_utc, ts_local, metric, <one column per label key>, value``. The label columns are the
    keys used by the exported series, sorted (``core``, ``gpu``, ``model``, ``server`` …);
    a cell is empty when that series has no such label. A key that clashes with a fixed
    column is written as ``label_<key>``.
``samples_wide.csv``
    One row per time bucket of the chosen resolution, one column per series, named
    ``metric{key="value",…}`` (Prometheus style); a cell is the mean of the series' samples in
    that bucket, empty when it had none.
``requests.csv``, ``alerts.csv``, ``events.csv``
    One row per request, alert transition and event; the metric pattern does not apply.

Safe for spreadsheets: every file goes through one writer (:class:`CsvFile`): cells are quoted
as RFC 4180 says (a line break or a quote inside a label cannot break a row), text cells that
begin with ``=``, ``+``, ``-``, ``@``, tab, carriage return or line feed get a leading ``'``
(OWASP's advice against formula injection; so does a text that begins with ``'``, so dropping
one leading ``'`` always restores the text), header cells included; numeric columns are
written as plain numbers. Everything streams from SQLite in chunks (memory stays flat
however big the session is) inside one read transaction (a consistent snapshot while the
app keeps recording). Files are written as ``*.part`` and renamed only when all are complete:
cancelling or failing leaves no half-written CSV behind.

>>> import tempfile
>>> from app.records import Sample
>>> from app.storage.store import Store
>>> folder = tempfile.TemporaryDirectory(); out = Path(folder.name)
>>> store = Store(out / "example.db"); store.start(session_name="run 3")
>>> store.put([Sample("cpu_percent", v, store.clock() + t) for t, v in enumerate([12.5, 30.0, 7.25])])
>>> store.close()
>>> job = CsvExport(store.reader(), ExportRequest(session_id=1, out_dir=out / "run3", resolution_s=1.0))
>>> job.run().rows   # on a worker thread; job.cancel() from any other
{'samples.csv': 3, 'samples_wide.csv': 3, 'requests.csv': 0, 'alerts.csv': 0, 'events.csv': 0}
>>> folder.cleanup()
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.records import RequestRecord
from app.storage.sessions import session_window

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000
_US = 1_000_000
_DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r", "\n")
# A text that already starts with ' gets one more: a spreadsheet hides exactly one leading ',
# so it shows the original text, and a reader undoes the escaping by dropping one.
_ESCAPED_FIRST = (*_DANGEROUS_FIRST, "'")
_EOL = "\r\n"  # RFC 4180 line ends, as the csv module writes them

Progress = Callable[[float, str], None]
"""``progress(fraction_done, what)``; called from the exporting thread."""

SAMPLE_FIXED = ("ts_utc", "ts_local", "metric", "value")
REQUEST_COLUMNS = tuple(f.name for f in dataclasses.fields(RequestRecord) if f.name != "ts_start")
ALERT_FIXED = ("ts_utc", "ts_local", "rule", "state", "severity", "value", "message")
EVENT_FIXED = ("ts_utc", "ts_local", "kind", "source", "message")


class ExportCancelled(Exception):
    """The export was cancelled; nothing was left in the output folder."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export.

    Args:
        session_id: the session.
        out_dir: the folder (created when missing); files of the same names are replaced.
        t_from, t_to: optional UTC epoch bounds (inclusive) inside the session.
        metrics: comma-separated glob patterns of metric names (``"gpu_*,system_cpu_percent"``);
            empty exports every series.
        resolution_s: bucket width of ``samples_wide.csv``.
    """

    session_id: int
    out_dir: Path
    t_from: float | None = None
    t_to: float | None = None
    metrics: str = ""
    resolution_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ExportResult:
    out_dir: Path
    rows: dict[str, int]   # file name -> data rows written
    seconds: float


# ----------------------------------------------------------------------------- cell helpers
def safe_text(text: str) -> str:
    """``text`` made inert for spreadsheets (OWASP CSV injection): a leading ``'`` when it
    starts with a character that would make it a formula (or with ``'`` itself, so that
    dropping one leading ``'`` always gives the original text back).

    >>> safe_text("=1+2"), safe_text("'=1+2"), safe_text("llama3")
    ("'=1+2", "''=1+2", 'llama3')
    """
    return "'" + text if text.startswith(_ESCAPED_FIRST) else text


def _cell(value: object) -> object:
    """A CSV cell: text escaped, numbers untouched, NULL empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_text(value)
    return value


class CsvFile:
    """The one way every export file is written: the csv module's RFC 4180 quoting (a cell
    holding a comma, a quote, a CR or an LF is quoted, so no text can break a row), every text
    cell made safe for spreadsheets (:func:`safe_text`), numbers as plain numbers, NULL empty.

    The csv module quotes a line break only when it is part of the writer's line terminator,
    so every cell goes through a writer whose terminator is ``\\r\\n`` (a writer with no
    terminator left a model named ``"m\\r=1+2"`` unquoted: a ragged row and a formula cell).
    """

    def __init__(self, f: io.TextIOBase) -> None:
        self._f = f
        self._writer = csv.writer(f, lineterminator=_EOL)

    def row(self, cells: Iterable[object]) -> None:
        self._writer.writerow([_cell(c) for c in cells])

    def rows(self, rows: Iterable[Iterable[object]]) -> None:
        self._writer.writerows([_cell(c) for c in row] for row in rows)

    @staticmethod
    def encode(cells: Iterable[object]) -> str:
        """Cells as :meth:`row` writes them, without the line end: a piece of a row that
        :meth:`write_encoded` assembles (``samples.csv`` encodes each series' cells once)."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=_EOL).writerow([_cell(c) for c in cells])
        return buffer.getvalue()[:-len(_EOL)]

    def write_encoded(self, text: str) -> None:
        """Rows already made of :meth:`encode`'d pieces, plain numbers and ISO times."""
        self._f.write(text)


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def iso_times(ts: Sequence[float] | np.ndarray) -> tuple[list[str], list[str]]:
    """ISO 8601 texts of UTC epoch seconds, to the microsecond: ``(utc with Z, local with offset)``.

    Vectorised with numpy: per-row ``datetime`` formatting would cap the export near 200k
    rows/s. The local offset is looked up once per chunk unless the chunk spans a change
    (daylight saving), then once per row.
    """
    arr = np.asarray(ts, dtype=np.float64)
    if arr.size == 0:
        return [], []
    micros = np.round(arr * _US).astype(np.int64)
    utc = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()
    lo, hi = float(arr.min()), float(arr.max())
    first, last = time.localtime(lo).tm_gmtoff, time.localtime(hi).tm_gmtoff
    if first == last and hi - lo < 86400:
        offsets = np.full(arr.size, first, dtype=np.int64)
        suffixes: Sequence[str] = [_offset_text(first)] * arr.size
    else:
        offsets = np.fromiter((time.localtime(t).tm_gmtoff for t in arr.tolist()), np.int64, arr.size)
        suffixes = [_offset_text(int(o)) for o in offsets.tolist()]
    local_wall = np.datetime_as_string((micros + offsets * _US).astype("datetime64[us]"), unit="us")
    return utc, [w + s for w, s in zip(local_wall.tolist(), suffixes, strict=True)]


def _time_prefixes(ts: np.ndarray) -> list[str]:
    """``"ts_utc,ts_local,"`` for each timestamp, formatted once per run of equal ones: a
    collector stamps every sample of one poll with the same time, so runs are the rule."""
    if ts.size == 0:
        return []
    new = np.empty(ts.size, dtype=bool)
    new[0] = True
    np.not_equal(ts[1:], ts[:-1], out=new[1:])
    utc, local = iso_times(ts[new])
    texts = np.array([f"{u},{loc}," for u, loc in zip(utc, local, strict=True)], dtype=object)
    prefixes: list[str] = texts[np.cumsum(new) - 1].tolist()
    return prefixes


def _label_columns(keys: Iterable[str], fixed: Sequence[str]) -> list[tuple[str, str]]:
    """``(label key, column name)`` sorted by key; a key clashing with a fixed column is prefixed."""
    return [(k, f"label_{k}" if k in fixed else k) for k in sorted(set(keys))]


def _series_column(name: str, labels: dict[str, str]) -> str:
    """``name{key="value",…}``, label values escaped as Prometheus does (and CR as ``\\r``,
    so a column name is one line even for a tool that splits lines without a CSV parser)."""
    if not labels:
        return name
    def quote(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return name + "{" + ",".join(f'{k}="{quote(v)}"' for k, v in sorted(labels.items())) + "}"


def metric_matcher(patterns: str) -> Callable[[str], bool]:
    """A predicate for comma-separated glob patterns; an empty string matches everything."""
    parts = [p.strip() for p in patterns.split(",") if p.strip()]
    if not parts:
        return lambda name: True
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in parts)


# ----------------------------------------------------------------------------------- export
class CsvExport:
    """One export job: :meth:`run` on a worker thread, :meth:`cancel` from any thread.

    Args:
        conn: a connection on the database (read-only is enough); used only by :meth:`run`'s
            thread apart from :meth:`cancel`'s interrupt.
        request: what to export.
        progress: called with the fraction done and what is being written.
    """

    FILES = ("samples.csv", "samples_wide.csv", "requests.csv", "alerts.csv", "events.csv")

    def __init__(self, conn: sqlite3.Connection, request: ExportRequest,
                 progress: Progress | None = None) -> None:
        self.conn = conn
        self.request = request
        self.progress = progress or (lambda fraction, what: None)
        self._cancelled = threading.Event()
        # Set by _prepare(): the series to write (id -> name, labels), the time range and the
        # SQL condition selecting this export's samples.
        self.series: dict[int, tuple[str, dict[str, str]]] = {}
        self.low = self.high = 0.0
        self.sample_where = ""
        self.sample_params: list[object] = []

    def cancel(self) -> None:
        """Stop the export as soon as possible (also interrupts a running SQLite query)."""
        self._cancelled.set()
        try:
            self.conn.interrupt()
        except sqlite3.ProgrammingError:  # the export has just ended and its connection is closed
            log.debug("cancel after the export ended")

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(self) -> ExportResult:
        """Write the files; raises ExportCancelled, LookupError (no such session), ValueError
        (a resolution <= 0), OSError (the folder), sqlite3.Error (the database)."""
        started = time.perf_counter()
        out = Path(self.request.out_dir)
        parts = {name: out / (name + ".part") for name in self.FILES}
        rows: dict[str, int] = {}
        try:
            # Inside the try: Cancel may interrupt the BEGIN itself (pressed as the thread starts).
            self.conn.execute("BEGIN")  # one snapshot for all files
            self._prepare()
            out.mkdir(parents=True, exist_ok=True)
            writers = (("samples.csv", self._write_samples, 0.0, 0.5),
                       ("samples_wide.csv", self._write_wide, 0.5, 0.9),
                       ("requests.csv", self._write_requests, 0.9, 0.95),
                       ("alerts.csv", self._write_alerts, 0.95, 0.97),
                       ("events.csv", self._write_events, 0.97, 1.0))
            for name, write, begin, end in writers:
                self._check()
                self.progress(begin, name)
                # backslashreplace: a text Python holds but UTF-8 cannot (a lone surrogate) is
                # written as \\udc80 rather than failing the export.
                with open(parts[name], "w", encoding="utf-8-sig", errors="backslashreplace", newline="") as f:
                    rows[name] = write(CsvFile(f), self._file_progress(name, begin, end))
            for name, part in parts.items():
                os.replace(part, out / name)
        except sqlite3.OperationalError:
            self._discard(parts)
            if self.cancelled:
                raise ExportCancelled() from None
            raise
        except BaseException:
            self._discard(parts)
            raise
        finally:
            self.conn.rollback()
        self.progress(1.0, "done")
        result = ExportResult(out, rows, time.perf_counter() - started)
        log.info("exported session %d to %s: %s in %.1f s", self.request.session_id, out, rows, result.seconds)
        return result

    # -------------------------------------------------------------------------- internals
    def _check(self) -> None:
        if self.cancelled:
            raise ExportCancelled()

    @staticmethod
    def _discard(parts: dict[str, Path]) -> None:
        for part in parts.values():
            part.unlink(missing_ok=True)

    def _prepare(self) -> None:
        """Read the session, its time range and the series to export."""
        req = self.request
        if req.resolution_s <= 0:
            raise ValueError("the resolution must be a positive number of seconds")
        row = self.conn.execute("SELECT started, ended FROM sessions WHERE id=?", (req.session_id,)).fetchone()
        if row is None:
            raise LookupError(f"no session {req.session_id}")
        low, high = session_window(row[0], row[1])
        self.low = low if req.t_from is None else max(low, req.t_from)
        self.high = high if req.t_to is None else min(high, req.t_to)
        matches = metric_matcher(req.metrics)
        self.series = {sid: (name, json.loads(labels)) for sid, name, labels in
                       self.conn.execute("SELECT id, name, labels FROM series ORDER BY name, labels")
                       if matches(name)}
        where, params = self._time_where("ts")
        if req.metrics:
            # The unary + keeps SQLite on one sequential scan: through the (series_id, ts)
            # index every row would be a random page read, about 5x slower.
            where += f" AND +series_id IN ({','.join('?' * len(self.series))})"
            params.extend(self.series)
        self.sample_where, self.sample_params = where, params
        # Only the series this session recorded decide the columns (a cheap distinct scan).
        present = {r[0] for r in self.conn.execute(
            f"SELECT DISTINCT series_id FROM samples NOT INDEXED WHERE {self.sample_where}", params)}
        self.series = {sid: v for sid, v in self.series.items() if sid in present}

    def _time_where(self, column: str) -> tuple[str, list[object]]:
        """The SQL condition (and its parameters) for this session and the chosen time range."""
        req = self.request
        where = "session_id=?"
        params: list[object] = [req.session_id]
        if req.t_from is not None:
            where += f" AND {column}>=?"
            params.append(req.t_from)
        if req.t_to is not None:
            where += f" AND {column}<=?"
            params.append(req.t_to)
        return where, params

    def _file_progress(self, name: str, begin: float, end: float) -> Callable[[float], None]:
        """Progress through one file (0…1) as the export's, that file being its [begin, end] share."""
        return lambda x: self.progress(begin + x * (end - begin), name)

    def _write_samples(self, f: CsvFile, progress: Callable[[float], None]) -> int:
        labels = _label_columns((k for _, lab in self.series.values() for k in lab), SAMPLE_FIXED)
        f.row(["ts_utc", "ts_local", "metric", *(c for _, c in labels), "value"])
        # Everything between the timestamps and the value is constant per series: encode once.
        middle = {sid: f.encode([name, *(lab.get(k, "") for k, _ in labels), ""])
                  for sid, (name, lab) in self.series.items()}
        span = max(1.0, self.high - self.low)
        # ifnull: a missing value becomes an empty cell; str() of a float is its shortest
        # round-trip repr, so values come back exactly.
        cursor = self.conn.execute(
            f"SELECT series_id, ts, ifnull(value, '') FROM samples NOT INDEXED WHERE {self.sample_where}",
            self.sample_params)
        written = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            self._check()
            prefixes = _time_prefixes(np.fromiter((r[1] for r in rows), np.float64, len(rows)))
            f.write_encoded("".join([f"{p}{middle[r[0]]}{r[2]}{_EOL}" for p, r in zip(prefixes, rows, strict=True)]))
            written += len(rows)
            progress(min(1.0, max(0.0, (rows[-1][1] - self.low) / span)))  # rows come in recording order
        return written

    def _write_wide(self, f: CsvFile, progress: Callable[[float], None]) -> int:
        columns = list(self.series)  # ordered by name, labels
        index = {sid: i for i, sid in enumerate(columns)}
        f.row(["ts_utc", "ts_local", *(_series_column(*self.series[s]) for s in columns)])
        res = float(self.request.resolution_s)
        cursor = self.conn.execute(
            f"SELECT CAST(ts / ? AS INTEGER) AS b, series_id, avg(value) FROM samples NOT INDEXED "
            f"WHERE {self.sample_where} GROUP BY b, series_id ORDER BY b", [res, *self.sample_params])
        span = max(res, self.high - self.low)
        written = 0
        bucket: int | None = None
        values: list[object] = [""] * len(columns)
        pending: list[tuple[int, list[object]]] = []

        def flush() -> None:
            utc, local = iso_times([b * res for b, _ in pending])
            f.rows([u, loc, *vals] for u, loc, (_, vals) in zip(utc, local, pending, strict=True))
            pending.clear()

        while rows := cursor.fetchmany(CHUNK_ROWS):
            self._check()
            for b, sid, mean in rows:
                if b != bucket:
                    if bucket is not None:
                        pending.append((bucket, values))
                    bucket, values = b, [""] * len(columns)
                values[index[sid]] = "" if mean is None else mean
            written += len(pending)
            flush()
            progress(min(1.0, max(0.0, (rows[-1][0] * res - self.low) / span)))  # rows come in bucket order
        if bucket is not None:
            pending.append((bucket, values))
            written += 1
            flush()
        return written

    def _write_requests(self, f: CsvFile, progress: Callable[[float], None]) -> int:
        where, params = self._time_where("ts_start")
        cursor = self.conn.execute(
            f"SELECT ts_start, {', '.join(REQUEST_COLUMNS)} FROM requests WHERE {where} ORDER BY ts_start", params)
        return self._write_rows(f, ["ts_utc", "ts_local", *REQUEST_COLUMNS], cursor, lambda row: row)

    def _write_alerts(self, f: CsvFile, progress: Callable[[float], None]) -> int:
        return self._write_labelled(f, "alert_events", ["rule", "state", "severity"], ["value", "message"], ALERT_FIXED)

    def _write_events(self, f: CsvFile, progress: Callable[[float], None]) -> int:
        return self._write_labelled(f, "events", ["kind", "source"], ["message"], EVENT_FIXED)

    def _write_labelled(self, f: CsvFile, table: str, before: list[str], after: list[str],
                        fixed: Sequence[str]) -> int:
        """alerts/events: ``ts_utc, ts_local, <before>, <one column per label key>, <after>``."""
        where, params = self._time_where("ts")
        keys: set[str] = set()
        for (text,) in self.conn.execute(f"SELECT DISTINCT labels FROM {table} WHERE {where}", params):
            keys.update(json.loads(text or "{}"))
        labels = _label_columns(keys, fixed)
        cursor = self.conn.execute(
            f"SELECT ts, {', '.join(before)}, labels, {', '.join(after)} FROM {table} WHERE {where} ORDER BY ts",
            params)
        n = 1 + len(before)

        def shape(row: tuple[Any, ...]) -> tuple[Any, ...]:
            lab = json.loads(row[n] or "{}")
            return (*row[:n], *(lab.get(k) for k, _ in labels), *row[n + 1:])
        header = ["ts_utc", "ts_local", *before, *(c for _, c in labels), *after]
        return self._write_rows(f, header, cursor, shape)

    def _write_rows(self, f: CsvFile, header: list[str], cursor: sqlite3.Cursor,
                    shape: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> int:
        """Rows whose first column is a timestamp."""
        f.row(header)
        written = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            self._check()
            utc, local = iso_times([r[0] for r in rows])
            f.rows([u, loc, *shape(r)[1:]] for u, loc, r in zip(utc, local, rows, strict=True))
            written += len(rows)
        return written
