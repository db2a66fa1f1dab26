"""Storage benchmark: batched ingest rate through the Store vs raw sqlite3 in the same run, and
the time of a last-hour query of one series with 10M rows present.

    .venv/bin/python bench/ingest.py [--rows 10000000]

Targets (docs/architecture.md, "Performance bars"): >= 100k samples/s batched; last-hour query <= 20 ms.
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.records import Sample, labels_of  # noqa: E402
from app.storage.queries import series_id, series_points  # noqa: E402
from app.storage.store import Store  # noqa: E402

N_SERIES = 100


def raw_baseline(path: Path, n: int) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE samples (session_id INT, series_id INT, ts REAL, value REAL)")
    conn.execute("CREATE INDEX ix ON samples (series_id, ts)")
    rows = [(1, i % N_SERIES, 1e9 + i // N_SERIES, float(i)) for i in range(n)]
    t = time.perf_counter()
    for start in range(0, n, 50_000):
        with conn:
            conn.executemany("INSERT INTO samples VALUES (?,?,?,?)", rows[start:start + 50_000])
    elapsed = time.perf_counter() - t
    conn.close()
    return n / elapsed


def store_ingest(store: Store, n: int, t0: float) -> float:
    keys = [labels_of(gpu=str(i)) for i in range(N_SERIES)]
    samples = [Sample("bench_value", float(i), t0 + i // N_SERIES, keys[i % N_SERIES]) for i in range(n)]
    t = time.perf_counter()
    for start in range(0, n, 10_000):  # collectors publish in batches
        store.put(samples[start:start + 10_000])
    store.flush(timeout=None)
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows present for the query")
    parser.add_argument("--rate-rows", type=int, default=1_000_000, help="rows for the ingest rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = raw_baseline(Path(tmp) / "raw.db", args.rate_rows)
        now = time.time()
        t0 = now - args.rows / N_SERIES  # 100 series at 1 Hz ending now
        store = Store(Path(tmp) / "bench.db")
        store.start()
        rate = store_ingest(store, args.rate_rows, t0)
        print(f"ingest: Store {rate:,.0f} samples/s vs raw sqlite3 executemany {base:,.0f}/s "
              f"(ratio {rate / base:.2f}); target >= 100,000/s")
        remaining = args.rows - args.rate_rows
        filled = time.perf_counter()
        store_ingest(store, remaining, t0 + args.rate_rows // N_SERIES)
        print(f"filled to {args.rows:,} rows in {time.perf_counter() - filled:.0f} s")
        store.close()
        conn = sqlite3.connect(f"file:{Path(tmp) / 'bench.db'}?mode=ro", uri=True)
        sid = series_id(conn, "bench_value", labels_of(gpu="42"))
        times = []
        for _ in range(20):
            t = time.perf_counter()
            ts, _values = series_points(conn, sid, now - 3600, now)
            times.append((time.perf_counter() - t) * 1000)
        print(f"last-hour query of one series among {args.rows:,} rows: {len(ts)} points, "
              f"median {statistics.median(times):.2f} ms, max {max(times):.2f} ms; target <= 20 ms")


if __name__ == "__main__":
    main()
