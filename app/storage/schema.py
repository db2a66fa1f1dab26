"""The SQLite schema and its forward migrations.

Each migration takes the database from version N-1 to N and runs in one transaction, so a
crash half-way leaves the previous version intact. ``schema_version`` holds one row.
Add a migration by appending a function to ``MIGRATIONS``; never edit a released one.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("sessions").create(
        {"id": int, "name": str, "started": float, "ended": float, "host": str}, pk="id"
    )
    db.table("series").create({"id": int, "name": str, "labels": str}, pk="id")
    db.table("series").create_index(["name", "labels"], unique=True)
    # A rowid table with one (series_id, ts) index: every dashboard and export read is
    # "one series over a time range"; a second index would halve ingest speed.
    db.table("samples").create({"session_id": int, "series_id": int, "ts": float, "value": float})
    db.table("samples").create_index(["series_id", "ts"])
    db.table("requests").create(
        {
            "id": int, "session_id": int, "ts_start": float, "server": str, "endpoint": str,
            "method": str, "model": str, "client": str, "status": int, "stream": int,
            "ttft_s": float, "latency_s": float, "itl_mean_s": float, "itl_p50_s": float,
            "itl_p99_s": float, "itl_max_s": float, "prompt_tokens": int,
            "completion_tokens": int, "tokens_estimated": int, "server_tokens_per_s": float,
            "client_tokens_per_s": float, "prompt_tokens_per_s": float, "load_s": float,
            "finish_reason": str, "error_type": str, "error": str, "bytes_in": int,
            "bytes_out": int, "source": str, "prompt_text": str, "response_text": str,
        },
        pk="id",
    )
    db.table("requests").create_index(["session_id", "ts_start"])
    db.table("requests").create_index(["ts_start"])
    db.table("requests").create_index(["model", "ts_start"])
    db.table("alert_events").create(
        {"id": int, "session_id": int, "ts": float, "rule": str, "state": str,
         "severity": str, "labels": str, "value": float, "message": str},
        pk="id",
    )
    db.table("alert_events").create_index(["session_id", "ts"])
    db.table("alert_events").create_index(["ts"])


def _v2_events_and_notes(db: sqlite_utils.Database) -> None:
    """Sessions get a user note; one-off events (model loaded, server down) get a table."""
    db.table("sessions").add_column("note", str)
    db.table("events").create(
        {"id": int, "session_id": int, "ts": float, "kind": str, "source": str,
         "message": str, "labels": str},
        pk="id",
    )
    db.table("events").create_index(["session_id", "ts"])
    db.table("events").create_index(["ts"])


def _v3_session_pid(db: sqlite_utils.Database) -> None:
    """Sessions remember the process recording them, so the next start can tell a session left
    "recording" by a crash (its process is gone) from one another llmmon is recording."""
    db.table("sessions").add_column("pid", int)


def _v4_usage_and_benchmarks(db: sqlite_utils.Database) -> None:
    """Usage rollups (app/usage/rollup.py: one row per 15-minute bucket, session, server and
    model, and per local day and model for the trends, kept by the store's writer) and named
    benchmark runs (app/benchmarks/)."""
    db.table("usage_rollup").create(
        {"bucket": float, "session_id": int, "server": str, "model": str,
         "requests": float, "requests_measured": float, "requests_from": int, "errors": int,
         "prompt_tokens": float, "prompt_tokens_measured": float, "prompt_tokens_from": int,
         "completion_tokens": float, "completion_tokens_measured": float, "completion_tokens_from": int,
         "estimated_tokens": int, "busy_s": float, "busy_s_measured": float, "busy_s_from": int,
         "energy_j": float, "energy_tokens": float, "energy_from": int, "energy_shared": int})
    db.table("usage_rollup").create_index(["bucket"])
    db.table("usage_rollup").create_index(["session_id"])
    # One row: how far the rollup has got, and the last rows it had seen (newer ones below
    # done_until arrived late and get their buckets recomputed).
    db.table("usage_rollup_state").create(
        {"id": int, "done_until": float, "requests_rowid": int, "samples_rowid": int, "trend_until": float},
        pk="id")
    # Each complete local day's speed figures per model (app/usage/trends.py).
    db.table("usage_trend_day").create(
        {"day_start": float, "day_end": float, "model": str, "servers": str, "requests": int,
         "speed_median": float, "speed_p90": float, "ttft_median": float, "ttft_p90": float, "loads": int,
         "load_median_s": float})
    db.table("usage_trend_day").create_index(["model", "day_start"])
    db.table("benchmarks").create(
        {"id": int, "name": str, "started": float, "ended": float, "session_id": int,
         "status": str, "config": str, "note": str}, pk="id")
    db.table("benchmark_results").create(
        {"id": int, "benchmark_id": int, "ts_start": float, "server": str, "model": str,
         "prompt_index": int, "repeat": int, "ttft_s": float, "tokens_per_s": float,
         "prompt_tokens": int, "completion_tokens": int, "tokens_estimated": int,
         "latency_s": float, "error_type": str, "error": str, "energy_j": float,
         "energy_source": str, "energy_shared": int}, pk="id")
    db.table("benchmark_results").create_index(["benchmark_id"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_initial, _v2_events_and_notes, _v3_session_pid, _v4_usage_and_benchmarks]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


class DatabaseRefused(RuntimeError):
    """llmmon will not use this file. ``str()`` is the one paragraph the user is shown: which
    file, what is wrong, that nothing was changed, and what to do."""

    def __init__(self, path: Path | str, problem: str, advice: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        advice = advice or (
            f"Move the file aside (for example rename it to {self.path.name}.broken) and llmmon "
            "starts a new, empty database in its place, or choose another file with --db PATH "
            "(or the LLMMON_DB environment variable).")
        super().__init__(f"llmmon cannot use the database {self.path}: {problem}. "
                         f"Nothing in the file was changed. {advice}")


class SchemaTooNew(DatabaseRefused):
    """The file was written by a newer llmmon; opening it would risk its data."""

    def __init__(self, path: Path | str, version: int) -> None:
        super().__init__(path, f"it was written by a newer llmmon (database schema version {version}; "
                               f"this llmmon knows versions up to {SCHEMA_VERSION})",
                         "Open it with that newer llmmon, or keep it and choose another file for this "
                         "one with --db PATH (or the LLMMON_DB environment variable).")


def problem_of(exc: sqlite3.Error) -> str:
    """What an SQLite error met while opening a file means, in the user's words."""
    text = str(exc)
    if "not a database" in text:
        return f"it is not an SQLite database, or its first page is damaged (SQLite: {text})"
    if "malformed" in text or "corrupt" in text:
        return f"the file is damaged (SQLite: {text})"
    if "locked" in text or "busy" in text:
        return f"another program holds a lock on it (SQLite: {text})"
    return f"SQLite cannot read it ({text})"


def check_schema(db: sqlite_utils.Database, path: Path | str) -> int:
    """The file's schema version; raises :class:`DatabaseRefused` when llmmon must not touch it
    (a newer version, or another program's database)."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(path, version)
    if version == 0 and (tables := [t for t in db.table_names() if not t.startswith("sqlite_")]):
        raise DatabaseRefused(path, "it is another program's SQLite database (tables "
                                    f"{', '.join(tables[:5])}{'...' if len(tables) > 5 else ''}; "
                                    "no llmmon schema)",
                              "Leave it to that program and choose a file for llmmon with --db PATH "
                              "(or the LLMMON_DB environment variable), or start without --db.")
    return version


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION, path: Path | str = "") -> int:
    """Bring ``db`` forward to ``target``; returns the version it started from. Raises
    :class:`DatabaseRefused` (see :func:`check_schema`) without changing the file."""
    start = check_schema(db, path or "(this database)")
    for version in range(start + 1, target + 1):
        with db.atomic():  # one transaction per step: a crash leaves N-1 intact
            if version == 1:
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            MIGRATIONS[version - 1](db)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    return start
