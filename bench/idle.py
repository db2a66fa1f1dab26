"""Idle cost of llmmon on a real X server: % of one core and RSS of the window visible (Overview
tab), the window closed to the tray, the headless recorder, and an empty PySide6 window, all
running at the same time on one Xvfb desktop (openbox + trayer), so they share the machine's
load. No LLM server is started (discovery still probes the default ports every 30 s).

    .venv/bin/python bench/idle.py [--rounds 3] [--seconds 40] [--warmup 15] [--size 1600x1000]

Targets (issue 13): visible <= 1.5 % of one core; hidden to tray <= headless + 0.2 %.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.support import wait_until  # noqa: E402
from tests.support.xdesktop import x_desktop  # noqa: E402

EMPTY_WINDOW = ("from PySide6.QtWidgets import QApplication, QMainWindow; a = QApplication([]); "
                "w = QMainWindow(); w.setWindowTitle('empty'); w.resize(1400, 900); w.show(); a.exec()")


def launch(name: str, cmd: list[str], env: dict[str, str], tmp: Path) -> subprocess.Popen:
    """Start one case with its own user dirs (settings, logs) so the cases share nothing."""
    home = tmp / name
    dirs = {f"XDG_{kind}_HOME": str(home / kind.lower()) for kind in ("DATA", "CONFIG", "STATE", "CACHE")}
    return subprocess.Popen(cmd, cwd=ROOT, env={**env, **dirs, "LLMMON_CONFIG": str(home / "config.toml")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=40.0, help="length of one measuring round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, after one warm-up; the median is shown")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--size", default="1600x1000", help="the X screen, WIDTHxHEIGHT")
    args = parser.parse_args()
    main_py = str(ROOT / "main.py")
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp_dir, x_desktop(args.size, wm=True, tray=True) as desk:
        tmp = Path(tmp_dir)
        cases = {
            "window visible (Overview)": launch("visible", [sys.executable, main_py, "--db", str(tmp / "v.db")],
                                                desk.env, tmp),
            "window closed to the tray": launch("tray", [sys.executable, main_py, "--db", str(tmp / "t.db")],
                                                desk.env, tmp),
            "headless recorder": launch("headless", [sys.executable, main_py, "--headless", "--db",
                                                     str(tmp / "h.db")], desk.env, tmp),
            "empty PySide6 window": launch("empty", [sys.executable, "-c", EMPTY_WINDOW], desk.env, tmp),
        }
        try:
            tray_pid = cases["window closed to the tray"].pid
            wait_until(lambda: desk.windows("llmmon", tray_pid), timeout=60, what="the window to close to the tray")
            for window in desk.windows("llmmon", tray_pid):
                desk.run("wmctrl", "-i", "-c", window)  # like the title bar's close button
            wait_until(lambda: not desk.windows("llmmon", tray_pid), what="the window to hide")
            time.sleep(args.warmup)  # benchmark pacing, not a test
            procs = {name: psutil.Process(case.pid) for name, case in cases.items()}
            rounds: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                before = {name: cpu_seconds(proc) for name, proc in procs.items()}
                started = time.monotonic()
                time.sleep(args.seconds)
                elapsed = time.monotonic() - started
                for name, proc in procs.items():
                    rounds[name].append((cpu_seconds(proc) - before[name]) / elapsed * 100)
                loads.append(os.getloadavg()[0])
            rss = {name: proc.memory_info().rss / 2**20 for name, proc in procs.items()}
            for name, case in cases.items():
                if case.poll() is not None:
                    raise SystemExit(f"{name} exited early with {case.returncode}")
        finally:
            for case in cases.values():
                case.terminate()
            for case in cases.values():
                case.wait(30)
    print(f"idle on Xvfb {args.size} (openbox, trayer), {args.rounds} rounds of {args.seconds:.0f} s after a "
          f"{args.warmup:.0f} s warm-up, load average {min(loads):.2f}–{max(loads):.2f}:")
    print(f"{'case':28} {'% of one core (median)':>23} {'rounds':>22} {'RSS MB':>7}")
    for name, values in rounds.items():
        spread = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:28} {statistics.median(values):23.2f} {spread:>22} {rss[name]:7.0f}")


if __name__ == "__main__":
    main()
