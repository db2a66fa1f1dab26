"""Usage benchmark: the Usage tab's 30-day view with 1M request rows and 10M samples present.

    .venv/bin/python bench/usage.py [--requests 1000000] [--samples 10000000] [--keep DB]

Fills a month of history (bench/usage_data.py: three servers, llama.cpp and vLLM counters, GPU
power), rolls it up once as the app's writer would (the one-off catch-up a database recorded
before the usage tables needs), then measures, median of 5 after one warm-up:

* the 30-day report (``usage_report``, by day) — what ``main.py usage --since 30d`` computes;
* the Usage tab's time to first draw: from asking for "Last 30 days" to the bars and table
  drawn (offscreen Qt, 1600x1000);
* a model's 30-day trend (``model_trend``) for the busiest model;
* one rollup step with the last minute's rows, as the app runs it every minute;
* for comparison, the same 30-day report computed from the raw rows without the rollup.

Target (issue 16): the 30-day view opens in well under a second.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sqlite_utils  # noqa: E402

from app.storage.store import connect  # noqa: E402
from app.usage.compute import compute_usage  # noqa: E402
from app.usage.merge import merge_sources  # noqa: E402
from app.usage.periods import local_midnight  # noqa: E402
from app.usage.report import usage_report  # noqa: E402
from app.usage.rollup import rollup_step  # noqa: E402
from app.usage.trends import model_trend  # noqa: E402
from bench.usage_data import populate  # noqa: E402

SERIES = 9  # sample series bench/usage_data.py writes


def timed(fn: Callable[[], object], runs: int = 5) -> tuple[float, float]:
    """(median, max) seconds of ``runs`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def first_draw(db: Path) -> tuple[float, float]:
    """The Usage tab, "Last 30 days": from the choice to the bars and table drawn."""
    from PySide6.QtWidgets import QApplication

    from app.config import Settings
    from app.runtime import Runtime
    from widgets.usage_panel import UsagePanel

    app = QApplication.instance() or QApplication([])
    runtime = Runtime.create(db, Settings(discover_local=False))
    panel = UsagePanel(runtime)
    panel.resize(1600, 1000)
    panel.show()
    times = []
    for run in range(6):
        panel.range_box.setCurrentIndex(0)  # today: then each 30-day choice is a new query
        panel.requery()
        while panel._busy or panel.report is None:
            app.processEvents()
        started = time.perf_counter()
        panel.range_box.setCurrentIndex(2)
        while panel._busy or panel.report is None or panel.report.t1 - panel.report.t0 < 29 * 86400:
            app.processEvents()
        panel.repaint()
        app.processEvents()
        if run:
            times.append(time.perf_counter() - started)
    runtime.stop()
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="write the database here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.keep or Path(tmp) / "usage.db"
        now = time.time()
        interval = args.days * 86400.0 * SERIES / args.samples
        started = time.perf_counter()
        filled = populate(db, days=args.days, requests=args.requests, sample_interval=interval, now=now)
        print(f"filled {filled.requests:,} requests and {filled.samples:,} samples in "
              f"{time.perf_counter() - started:.0f} s ({db.stat().st_size / 1e9:.2f} GB)")
        conn = connect(db, readonly=True)
        t0 = local_midnight(now, args.days - 1)

        raw = time.perf_counter()
        merge_sources(compute_usage(conn, t0, now))
        raw = time.perf_counter() - raw

        writer = sqlite_utils.Database(connect(db))
        started = time.perf_counter()
        steps = 1
        while rollup_step(writer, now):
            steps += 1
        catch_up = time.perf_counter() - started
        rows = writer.execute("SELECT count(*) FROM usage_rollup").fetchone()[0]
        print(f"one-off rollup of {args.days} days: {catch_up:.1f} s in {steps} steps, {rows:,} rollup rows")

        report, report_max = timed(lambda: usage_report(conn, t0, now, "day"))
        print(f"30-day report by day (main.py usage --since 30d): median {report * 1000:.0f} ms, "
              f"max {report_max * 1000:.0f} ms")
        draw, draw_max = first_draw(db)
        print(f"Usage tab, Last 30 days, time to first draw: median {draw * 1000:.0f} ms, max {draw_max * 1000:.0f} ms;"
              " target well under 1 s")
        busiest = conn.execute("SELECT model, count(*) AS n FROM requests GROUP BY model ORDER BY n DESC "
                               "LIMIT 1").fetchone()
        trend, trend_max = timed(lambda: model_trend(conn, busiest[0], t0, now))
        print(f"30-day trend of {busiest[0]} ({busiest[1]:,} requests): median {trend * 1000:.0f} ms, "
              f"max {trend_max * 1000:.0f} ms")
        tick, tick_max = timed(lambda: rollup_step(writer, time.time()))
        print(f"rollup step with the last minute's rows: median {tick * 1000:.1f} ms, max {tick_max * 1000:.1f} ms")
        print(f"for comparison, the 30-day report from the raw rows (no rollup): {raw:.1f} s "
              f"({raw / report:.0f}x the rolled-up report)")
        writer.conn.close()
        conn.close()


if __name__ == "__main__":
    main()
