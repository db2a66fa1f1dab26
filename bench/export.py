"""CSV export benchmark: rows/s writing ``samples.csv`` for a session of 1M samples, against a
plain ``csv.writer`` dump of the same rows (raw epoch floats, JSON labels) in the same run,
and the process's peak RSS above its level before the export (memory must stay flat).

    .venv/bin/python bench/export.py [--rows 1000000] [--series 100]

Target (docs/architecture.md, "Performance bars"): >= 500k rows/s.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.export import CsvExport, ExportRequest  # noqa: E402
from app.records import Sample, labels_of  # noqa: E402
from app.storage.store import Store, connect  # noqa: E402


class PeakRss:
    """Samples this process's RSS every few milliseconds on a thread; keeps the maximum."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def record(path: Path, rows: int, n_series: int, end: float) -> int:
    """A session of ``rows`` samples over ``n_series`` labelled series at 1 Hz ending at ``end``,
    through the Store (its clock set to the session's start, then its end)."""
    t0 = end - rows / n_series
    clock = [t0]
    store = Store(path, clock=lambda: clock[0])
    store.start(session_name="bench")
    keys = [(f"bench_metric_{i % 10}", labels_of(server="ollama@127.0.0.1:11434", model=f"model-{i % 7}",
                                                  gpu=str(i // 10))) for i in range(n_series)]
    for start in range(0, rows, 50_000):
        store.put(Sample(keys[i % n_series][0], i * 0.25, t0 + i // n_series, keys[i % n_series][1])
                  for i in range(start, min(rows, start + 50_000)))
    sid = store.session_id
    clock[0] = end
    store.close()
    return sid


def plain_dump(path: Path, sid: int, out: Path) -> tuple[int, float]:
    conn = connect(path, readonly=True)
    started = time.perf_counter()
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ts", "metric", "labels", "value"])
        cursor = conn.execute("SELECT p.ts, s.name, s.labels, p.value FROM samples p NOT INDEXED "
                              "JOIN series s ON s.id = p.series_id WHERE p.session_id=?", (sid,))
        n = 0
        while rows := cursor.fetchmany(20_000):
            writer.writerows(rows)
            n += len(rows)
    conn.close()
    return n, time.perf_counter() - started


def export(path: Path, sid: int, out: Path) -> tuple[dict[str, int], dict[str, float], float, PeakRss]:
    conn = connect(path, readonly=True)
    stage_start: dict[str, float] = {}

    def progress(fraction: float, what: str) -> None:
        stage_start.setdefault(what, time.perf_counter())

    with PeakRss() as rss:
        started = time.perf_counter()
        result = CsvExport(conn, ExportRequest(sid, out, resolution_s=10.0), progress).run()
        total = time.perf_counter() - started
    conn.close()
    stages = {"samples.csv": stage_start["samples_wide.csv"] - stage_start["samples.csv"],
              "samples_wide.csv": stage_start["requests.csv"] - stage_start["samples_wide.csv"]}
    return result.rows, stages, total, rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        t = time.perf_counter()
        now = time.time()
        sid = record(db, args.rows, args.series, end=now - args.rows / args.series)
        # A second, later session of the same size: the export must pick its own rows out of
        # a table twice as big, as it would in a database holding many sessions.
        record(db, args.rows, args.series, end=now)
        print(f"recorded 2 sessions x {args.rows:,} samples ({args.series} series) in "
              f"{time.perf_counter() - t:.0f} s; database {db.stat().st_size / 1e6:.0f} MB")
        n_plain, t_plain = plain_dump(db, sid, Path(tmp) / "plain.csv")
        rows, stages, total, rss = export(db, sid, Path(tmp) / "export")
        assert rows["samples.csv"] == n_plain == args.rows, (rows, n_plain)
        plain_rate = n_plain / t_plain
        rate = rows["samples.csv"] / stages["samples.csv"]
        print(f"plain csv.writer dump (epoch floats, JSON labels): {plain_rate:,.0f} rows/s")
        print(f"samples.csv (ISO UTC + local, label columns, escaped): {rate:,.0f} rows/s "
              f"(ratio {rate / plain_rate:.2f} vs plain); target >= 500,000 rows/s")
        print(f"samples_wide.csv at 10 s: {rows['samples.csv'] / stages['samples_wide.csv']:,.0f} "
              f"samples/s read, {rows['samples_wide.csv']:,} rows written")
        print(f"whole export (5 files): {total:.2f} s, {args.rows / total:,.0f} samples/s")
        print(f"RSS before export {rss.baseline / 1e6:.0f} MB, peak during export "
              f"{rss.peak / 1e6:.0f} MB (+{(rss.peak - rss.baseline) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
