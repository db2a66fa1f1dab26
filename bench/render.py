"""Dashboard benchmark: redraw cost of 12 charts with 1 h of 1 Hz data (live buffers) and with
24 h from SQLite, the idle CPU and RSS of the running app, and the time until its window shows.

    .venv/bin/python bench/render.py [--idle-seconds 30]

Targets (docs/architecture.md, "Performance bars"): <= 8 ms per redraw, <= 2 % of one core
idle, <= 200 MB RSS, window shown <= 1.5 s after start. Baselines measured in the same run:
bare pyqtgraph PlotWidgets given the same arrays, and an empty PySide6 window idling. Each redraw
figure is given as wall time and as this process's CPU time: on a machine shared with other work
the wall time mostly measures the waiting, the CPU time what the redraw costs.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from pyqtgraph.widgets.GraphicsView import GraphicsView  # noqa: E402
from PySide6.QtWidgets import QApplication, QGridLayout, QWidget  # noqa: E402

from app.buffers import LiveBuffers  # noqa: E402
from app.records import Sample, labels_of  # noqa: E402
from app.storage.history import HistorySource  # noqa: E402
from app.storage.store import Store  # noqa: E402
from widgets.time_window import TimeWindow  # noqa: E402
from widgets.timeseries_plot import MetricSpec, TimeSeriesPlot  # noqa: E402

N_PLOTS = 12
HOUR = 3600


def grid(widgets: Sequence[QWidget]) -> QWidget:
    host = QWidget()
    layout = QGridLayout(host)
    for i, w in enumerate(widgets):
        layout.addWidget(w, i // 4, i % 4)
    host.resize(1600, 1000)
    host.show()
    return host


class PaintCounter:
    """Counts the charts' paint events, to show each round really repainted every chart."""

    def __init__(self) -> None:
        self.count = 0
        original = GraphicsView.paintEvent

        def counting(view, event) -> None:
            self.count += 1
            original(view, event)
        GraphicsView.paintEvent = counting


PAINTS = PaintCounter()


def timed_redraws(step, rounds: int = 60) -> tuple[list[float], list[float], int]:
    """Milliseconds (wall, and CPU of this process) per round of ``step(i)`` (new data, the app's
    refresh) plus the event processing in which Qt repaints what changed — the path the app's UI
    timer takes — and the paint events of the last round."""
    app = QApplication.instance()
    app.processEvents()
    wall, cpu = [], []
    for i in range(rounds):
        PAINTS.count = 0
        t, c = time.perf_counter(), time.process_time()
        step(i)
        app.processEvents()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall[5:], cpu[5:], PAINTS.count  # first rounds include lazy initialisation


def bench_live(now: float) -> tuple[list[float], list[float], list[float], list[float], int, int]:
    buffers = LiveBuffers()
    for p in range(N_PLOTS):
        buffers.add(Sample("bench_metric", 50 + 40 * ((i * 7 + p) % 100) / 100, now - HOUR + i,
                           labels_of(plot=p)) for i in range(HOUR))
    plots = [TimeSeriesPlot(f"plot {p}", "%", [MetricSpec("bench_metric", "p{plot}", (("plot", str(p)),))])
             for p in range(N_PLOTS)]
    host = grid(plots)

    def ours(i: int) -> None:
        t = now + i
        buffers.add(Sample("bench_metric", 50.0, t, labels_of(plot=p)) for p in range(N_PLOTS))
        for plot in plots:
            plot.refresh(buffers, t, HOUR)

    mine, mine_cpu, paints = timed_redraws(ours)
    host.close()

    bare = [pg.PlotWidget() for _ in range(N_PLOTS)]
    curves = [b.plot([], []) for b in bare]
    host = grid(bare)

    def baseline(i: int) -> None:  # the same work minus llmmon: a new point, the last hour
        t = now + 1000 + i
        buffers.add(Sample("bench_metric", 50.0, t, labels_of(plot=p)) for p in range(N_PLOTS))
        for p, curve in enumerate(curves):
            ts, values = buffers.window(("bench_metric", labels_of(plot=p)), since=t - HOUR)
            curve.setData(ts, values)

    base, base_cpu, base_paints = timed_redraws(baseline)
    host.close()
    return mine, mine_cpu, base, base_cpu, paints, base_paints


def bench_history(now: float, tmp: Path) -> tuple[float, list[float], list[float], int]:
    store = Store(tmp / "render.db")
    store.start()
    for p in range(N_PLOTS):
        store.put([Sample("bench_day", float(i % 97), now - 86400 + i, labels_of(plot=p)) for i in range(86400)])
    store.close()
    buffers = LiveBuffers()
    history = HistorySource(buffers, lambda: Store(tmp / "render.db").reader())
    view = TimeWindow(span_s=86400)
    plots = [TimeSeriesPlot(f"plot {p}", "%", [MetricSpec("bench_day", "p{plot}", (("plot", str(p)),))])
             for p in range(N_PLOTS)]
    for plot in plots:
        plot.attach(view, history)
    host = grid(plots)
    t = time.perf_counter()
    for plot in plots:
        plot.refresh(buffers, now)
    QApplication.instance().processEvents()
    first = (time.perf_counter() - t) * 1000

    def step(i: int) -> None:
        buffers.add(Sample("bench_day", 1.0, now + i, labels_of(plot=p)) for p in range(N_PLOTS))
        for plot in plots:
            plot.refresh(buffers, now + i)

    later, later_cpu, _ = timed_redraws(step)
    points = len(plots[0].curve(plots[0].curve_keys()[0]).xData)
    host.close()
    return first, later, later_cpu, points


def idle_cost(cmd: list[str], seconds: float, env: dict) -> tuple[float, float]:
    """% of one core and RSS (MB) of a process over ``seconds`` after a 10 s warm-up."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(10)  # benchmark pacing, not a test
        c0 = sum(p.cpu_times()[:2])
        time.sleep(seconds)
        cpu = (sum(p.cpu_times()[:2]) - c0) / seconds * 100
        rss = p.memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
    return cpu, rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    now = time.time()
    mine, mine_cpu, base, base_cpu, paints, base_paints = bench_live(now)
    med = statistics.median
    print(f"redraw, {N_PLOTS} charts x 1 h of 1 Hz (live buffers): median {med(mine):.2f} ms "
          f"(CPU {med(mine_cpu):.2f} ms), p95 {sorted(mine)[int(len(mine) * .95)]:.2f} ms "
          f"({paints} paint events a round); bare pyqtgraph "
          f"PlotWidgets given the same arrays {med(base):.2f} ms (CPU {med(base_cpu):.2f} ms; {base_paints} paint "
          f"events; ratio {med(mine) / med(base):.2f}, CPU {med(mine_cpu) / med(base_cpu):.2f}); target <= 8 ms")
    with tempfile.TemporaryDirectory() as tmp:
        first, later, later_cpu, points = bench_history(now, Path(tmp))
        print(f"24 h from SQLite ({N_PLOTS} x 86,400 rows): first draw {first:.0f} ms (12 downsampling queries), "
              f"then median {med(later):.2f} ms (CPU {med(later_cpu):.2f} ms) per redraw; {points} points per curve")
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        db = str(Path(tmp) / "idle.db")
        starts = []
        for _ in range(5):
            launched = time.time()
            out = subprocess.run([sys.executable, "main.py", "--db", db + ".smoke", "--smoke"], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=60).stdout
            shown = re.search(r"\(at ([\d.]+)\)", out)
            if shown:
                starts.append(float(shown.group(1)) - launched)
        print(f"start-up, launch to window shown (5 runs): median {statistics.median(starts):.2f} s, "
              f"max {max(starts):.2f} s; target <= 1.5 s")
        cpu, rss = idle_cost([sys.executable, "main.py", "--db", db], args.idle_seconds, env)
        empty = ("from PySide6.QtWidgets import QApplication, QMainWindow; a = QApplication([]); "
                 "w = QMainWindow(); w.show(); a.exec()")
        empty_cpu, empty_rss = idle_cost([sys.executable, "-c", empty], args.idle_seconds, env)
        print(f"idle app, all collectors at 1 s: {cpu:.2f} % of one core, RSS {rss:.0f} MB; "
              f"empty PySide6 window: {empty_cpu:.2f} %, {empty_rss:.0f} MB; targets <= 2 %, <= 200 MB")
    app.quit()


if __name__ == "__main__":
    main()
