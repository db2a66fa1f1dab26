"""Print what ran on your LLM servers: requests, tokens, errors, busy time and energy per token,
per server and model, over a range, optionally per hour, day or week.

    main.py usage                         # the last 7 days, one line per server and model
    main.py usage --since 30d --by day    # per local day
    main.py usage --since 2024-05-01 --by week --per server --csv usage.csv

--since takes 7d, 30d, 2w (calendar days, from local midnight), 24h, 90m (rolling), today, all,
or a date/time (local unless it names its zone). Token counts come from the servers' own
counters where they have them (llama.cpp and vLLM /metrics), otherwise from the requests llmmon
measured (proxy, prompt tests, benchmarks); the "from" column says which, and never adds the
two (see app/usage/report.py). Reads the database read-only: safe while the app records.
"""
from __future__ import annotations

import argparse
import io
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

from app.config import db_path
from app.durations import format_duration
from app.export import CsvFile
from app.storage.store import connect
from app.usage.energy import SOURCE_TEXT
from app.usage.periods import GROUPS, SINCE_HELP, parse_since
from app.usage.report import REQUESTS, SERVER, UsageCell, UsageReport, first_recorded, usage_report

CSV_COLUMNS = ("period_start", "server", "model", "requests", "requests_from", "errors", "prompt_tokens",
               "prompt_tokens_from", "completion_tokens", "completion_tokens_from",
               "completion_tokens_measured_per_request", "estimated_tokens", "busy_seconds", "busy_from",
               "energy_joules", "joules_per_token", "energy_from", "energy_is_estimate")


def since_arg(text: str) -> float:
    try:
        return parse_since(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=since_arg, default="7d", metavar="RANGE",
                        help=f"where the range starts: {SINCE_HELP} (default 7d)")
    parser.add_argument("--by", choices=(*GROUPS, "none"), default="none",
                        help="one line per server and model per local hour, day or week (default: none)")
    parser.add_argument("--per", choices=("model", "server"), default="model",
                        help="lines per server and model (default), or per server")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the lines to a CSV file")
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="database file")


def _origin(cell: UsageCell, metric: str) -> str:
    sources = cell.sources[metric]
    if sources == {SERVER}:
        return "server"
    if sources == {REQUESTS}:
        return "requests"
    return "server+requests" if sources else ""


def _tokens_from(cell: UsageCell) -> str:
    origin = _origin(cell, "completion_tokens")
    if SERVER in cell.sources["completion_tokens"] and cell.completion_tokens > 0:
        share = min(1.0, cell.measured["completion_tokens"] / cell.completion_tokens)
        return f"{origin} ({share:.0%} measured)"
    return origin


def _energy_text(cell: UsageCell) -> str:
    per_token = cell.joules_per_token
    if per_token is None:
        return ""
    return f"{per_token:.3g}{'~' if cell.energy_shared else ''}"


def _busy(seconds: float) -> str:
    return format_duration(round(seconds)) if seconds >= 1 else ("0s" if seconds == 0 else "<1s")


def _period_text(start: float, group: str) -> str:
    moment = datetime.fromtimestamp(start)
    if group == "hour":
        return f"{moment:%Y-%m-%d %H:00}"
    if group == "week":
        return f"week of {moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%d %a}"


def _line(first: str, cell: UsageCell, per: str) -> list[str]:
    name = (cell.model or "(unknown model)") if per == "model" else cell.server
    return [first, cell.server, name, f"{cell.requests:,.0f}", f"{cell.errors:,}", f"{cell.prompt_tokens:,.0f}",
            f"{cell.completion_tokens:,.0f}", _busy(cell.busy_s), _energy_text(cell), _tokens_from(cell)]


def format_report(report: UsageReport, per: str = "model") -> str:
    """The report as an aligned text table with a legend."""
    header = ["period" if report.group != "none" else "", "server", "model" if per == "model" else "server",
              "requests", "errors", "prompt tok", "completion tok", "busy", "J/token", "tokens from"]
    lines: list[list[str]] = []
    if report.group != "none":
        for cell in report.cells:
            lines.append(_line(_period_text(cell.start, report.group), cell, per))
        lines.append([""] * len(header))
    for cell in report.rows:
        lines.append(_line("range" if report.group != "none" else "", cell, per))
    total = _line("TOTAL", report.total, per)
    total[1] = total[2] = ""
    lines.append(total)
    if per == "server":
        header = [h for i, h in enumerate(header) if i != 1]
        lines = [[c for i, c in enumerate(row) if i != 1] for row in lines]
    numeric = {h for h in header if h in ("requests", "errors", "prompt tok", "completion tok", "busy", "J/token")}
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    out = []
    for row in [header, *lines]:
        cells = [c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(row, widths, header, strict=True)]
        out.append("  ".join(cells).rstrip())
    energy = sorted({s for c in report.rows for s in c.energy_sources if s})
    legend = ["tokens from: server = the server's own counters (/metrics), requests = what llmmon measured "
              "(proxy, prompt tests, benchmarks); (N% measured) = the part of the server's count also "
              "measured per request. Never both added."]
    if energy:
        legend.append("J/token: " + ", ".join(SOURCE_TEXT.get(s, s) for s in energy)
                      + "; ~ = an estimate (requests overlapped on the device)")
    return "\n".join([*out, "", *legend])


def write_csv(report: UsageReport, path: Path, per: str = "model") -> int:
    """The report's lines (per period when grouped, else per server and model) as CSV; returns
    the number of data rows. Text cells are made inert for spreadsheets like every llmmon CSV."""
    cells = report.cells if report.group != "none" else report.rows
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        return _write_cells(f, cells)


def _write_cells(f: io.TextIOBase, cells: list[UsageCell]) -> int:
    writer = CsvFile(f)  # the export's writer: RFC 4180 quoting, text cells inert for spreadsheets
    writer.row(CSV_COLUMNS)
    for c in cells:
        per_token = c.joules_per_token
        writer.row([
            datetime.fromtimestamp(c.start).astimezone().isoformat(), c.server, c.model,
            round(c.requests, 3), _origin(c, "requests"), c.errors, round(c.prompt_tokens, 3),
            _origin(c, "prompt_tokens"), round(c.completion_tokens, 3), _origin(c, "completion_tokens"),
            round(c.measured["completion_tokens"], 3), c.estimated_tokens, round(c.busy_s, 3),
            _origin(c, "busy_s"), round(c.energy_j, 3) if per_token is not None else "",
            f"{per_token:.6g}" if per_token is not None else "",
            " ".join(sorted(s for s in c.energy_sources if s)), int(c.energy_shared) if per_token is not None else ""])
    return len(cells)


def run(args: argparse.Namespace) -> int:
    path = db_path(getattr(args, "db", None))
    if not path.exists():
        print(f"llmmon usage: no database at {path}", file=sys.stderr)
        return 2
    now = time.time()
    try:
        conn = connect(path, readonly=True)
        t0 = args.since
        if t0 == 0.0:  # --since all
            first = first_recorded(conn)
            t0 = first if first is not None else now
        report = usage_report(conn, t0, now, args.by)
    except sqlite3.Error as exc:
        print(f"llmmon usage: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if args.per == "server":
        report = report.by_server()
    zone = time.strftime("%Z")
    print(f"llmmon usage {datetime.fromtimestamp(t0):%Y-%m-%d %H:%M} → {datetime.fromtimestamp(now):%Y-%m-%d %H:%M}"
          f" ({zone}){', by ' + args.by if args.by != 'none' else ''}")
    if not report.rows:
        print("no requests and no server counters in this range")
    else:
        print(format_report(report, args.per))
    if args.csv is not None:
        try:
            rows = write_csv(report, args.csv.expanduser(), args.per)
        except OSError as exc:
            print(f"llmmon usage: cannot write {args.csv}: {exc}", file=sys.stderr)
            return 1
        print(f"llmmon usage: {rows} lines written to {args.csv}")
    return 0
