"""Export a recorded session to CSV files (requests, samples long and wide, alerts, events).

    main.py export --session latest --out ~/llmmon-run
    main.py --db other.db export --session 3 --out run3 --from 2024-05-02T09:00 --to 2024-05-02T10:00
    main.py export --session latest --out gpu --metrics 'gpu_*,llm_tokens_per_second' --resolution 60

--from/--to take ISO 8601 (a time without a zone is local time) or UTC epoch seconds.
Reads the database read-only: safe while the app is recording into it.
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import sqlite_utils

from app.config import db_path
from app.export import CsvExport, ExportCancelled, ExportRequest
from app.storage.schema import DatabaseRefused, check_schema, problem_of
from app.storage.sessions import SessionError, resolve_session
from app.storage.store import connect

log = logging.getLogger(__name__)

EXPORT_NEEDS_VERSION = 2
"""The schema version that added the events table, the newest table export reads."""


def parse_time(text: str) -> float:
    """UTC epoch seconds from ISO 8601 (naive = local time) or from a plain number."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()  # naive datetimes are taken as local
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or epoch seconds: {text!r}") from None


def parse_resolution(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``5m`` or ``1h``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    scale = units.get(text[-1:].lower(), None)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10, 10s, 5m, 1h)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the resolution must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", default="latest", metavar="ID|latest",
                        help="the session to export (default: the latest)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for the CSV files (created; files of the same names are replaced)")
    parser.add_argument("--from", dest="t_from", type=parse_time, metavar="TIME",
                        help="only data at or after this time")
    parser.add_argument("--to", dest="t_to", type=parse_time, metavar="TIME",
                        help="only data at or before this time")
    parser.add_argument("--metrics", default="", metavar="PATTERN",
                        help="comma-separated glob patterns of metric names (default: all)")
    parser.add_argument("--resolution", type=parse_resolution, default=10.0, metavar="DURATION",
                        help="bucket width of samples_wide.csv (default 10s)")
    # Also accepted after the subcommand; the main parser's --db is used when given there.
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="database file")


def check_exportable(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`DatabaseRefused` unless the file is an llmmon database this version can
    read (not newer, not another program's, not too old to have every table export reads)."""
    version = check_schema(sqlite_utils.Database(conn), path)
    if version == 0:
        raise DatabaseRefused(path, "it holds no llmmon data (an empty SQLite file)",
                              "Choose the file llmmon records into with --db PATH (or LLMMON_DB).")
    if version < EXPORT_NEEDS_VERSION:
        raise DatabaseRefused(path, f"it was written by an older llmmon (database schema version {version})",
                              "Open it once with this llmmon (for example: main.py --headless --db PATH, "
                              "then Ctrl-C) to bring it up to date, then export again.")


def run(args: argparse.Namespace) -> int:
    path = db_path(getattr(args, "db", None))
    if not path.exists():
        print(f"llmmon export: no database at {path}", file=sys.stderr)
        return 2
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        print(DatabaseRefused(path, problem_of(exc)), file=sys.stderr)
        return 2
    try:
        check_exportable(conn, path)
        session_id = resolve_session(conn, args.session)
    except (SessionError, DatabaseRefused, sqlite3.Error) as exc:
        conn.close()
        if isinstance(exc, SessionError):
            print(f"llmmon export: {exc}", file=sys.stderr)
        else:  # the refusal paragraph says which file, what is wrong and what to do
            print(exc if isinstance(exc, DatabaseRefused) else DatabaseRefused(path, problem_of(exc)),
                  file=sys.stderr)
        return 2
    request = ExportRequest(session_id, args.out.expanduser(), args.t_from, args.t_to,
                            args.metrics, args.resolution)
    job = CsvExport(conn, request)
    try:
        result = job.run()
    except KeyboardInterrupt:
        print("llmmon export: cancelled, nothing written", file=sys.stderr)
        return 130
    except ExportCancelled:
        return 130
    except (OSError, sqlite3.Error) as exc:
        print(f"llmmon export: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    counts = ", ".join(f"{name} {n:,} rows" for name, n in result.rows.items())
    print(f"llmmon export: session {session_id} to {result.out_dir} in {result.seconds:.1f} s: {counts}")
    return 0
