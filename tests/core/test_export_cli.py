"""``main.py export`` on a session recorded by ``main.py --headless``, both as real processes."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.support import count, query, user_dirs_env, wait_until

ROOT = Path(__file__).resolve().parents[2]


def llmmon(*args: str, tz: str = "UTC") -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "", "TZ": tz}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def headless_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("headless") / "llmmon.db"
    # Module-scoped: conftest's per-test isolation is not in place yet, so give the recorder
    # its own user dirs (never the real user's config, which could name servers to poll).
    env = {**os.environ, **user_dirs_env(tmp_path_factory.mktemp("home")), "QT_QPA_PLATFORM": ""}
    env.pop("LLMMON_DB", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db),
                             "--session-name", "bench night"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "recording to" in proc.stdout.readline()
        # Three polls at least, so the per-second rates (which need two) are in there too.
        wait_until(lambda: count(db, "samples") >= 3 * 15, timeout=30, what="samples from --headless")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    return db


def read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_cli_exports_the_latest_headless_session(headless_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = llmmon("--db", str(headless_db), "export", "--session", "latest", "--out", str(out),
                  "--resolution", "1s", tz="Asia/Kolkata")
    assert done.returncode == 0, done.stderr
    assert "session 1" in done.stdout and str(out) in done.stdout
    assert sorted(p.name for p in out.iterdir()) == \
        ["alerts.csv", "events.csv", "requests.csv", "samples.csv", "samples_wide.csv"]
    rows = read(out / "samples.csv")
    stored = query(headless_db, "SELECT s.name, p.value FROM samples p JOIN series s ON s.id = p.series_id "
                                "WHERE p.session_id=1")
    assert Counter((r["metric"], float(r["value"])) for r in rows) == Counter(stored)
    assert all(r["ts_local"].endswith("+05:30") for r in rows)  # the zone the command ran in
    for r in rows[:5]:
        assert datetime.fromisoformat(r["ts_local"]) == datetime.fromisoformat(r["ts_utc"])
    wide = read(out / "samples_wide.csv")
    polls = {r["ts_utc"][:19] for r in rows}
    assert len(wide) == len(polls)  # one row per second at 1 s: the collector polls once a second
    assert read(out / "requests.csv") == [] and read(out / "alerts.csv") == []


def test_cli_filters_metrics_and_time(headless_db: Path, tmp_path: Path) -> None:
    stamps = [t for (t,) in query(headless_db, "SELECT p.ts FROM samples p JOIN series s ON s.id = p.series_id "
                                               "WHERE s.name='system_memory_percent' ORDER BY p.ts")]
    done = llmmon("export", "--db", str(headless_db), "--session", "1", "--out", str(tmp_path),
                  "--metrics", "system_memory_*", "--from", str(stamps[1]))
    assert done.returncode == 0, done.stderr
    rows = read(tmp_path / "samples.csv")
    names = {r["metric"] for r in rows}
    assert names == {"system_memory_used_bytes", "system_memory_total_bytes", "system_memory_percent"}
    assert len(rows) == 3 * (len(stamps) - 1)


def test_cli_errors_are_clear(headless_db: Path, tmp_path: Path) -> None:
    missing = llmmon("--db", str(headless_db), "export", "--session", "7", "--out", str(tmp_path))
    assert missing.returncode == 2 and "no session 7" in missing.stderr
    assert list(tmp_path.iterdir()) == []
    nodb = llmmon("--db", str(tmp_path / "none.db"), "export", "--out", str(tmp_path))
    assert nodb.returncode == 2 and "no database" in nodb.stderr
    bad_time = llmmon("--db", str(headless_db), "export", "--out", str(tmp_path), "--from", "yesterday")
    assert bad_time.returncode == 2 and "not an ISO 8601 time" in bad_time.stderr
