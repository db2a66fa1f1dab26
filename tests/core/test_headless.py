"""``main.py --headless`` records into the same store without any Qt window."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import count, query, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_headless_records_until_sigint(db_file: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": ""}  # no display needed at all
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db_file)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "recording to" in line, line + proc.stderr.read()
        wait_until(lambda: count(db_file, "samples") >= 20, timeout=20, what="samples from --headless")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "all data written" in out
    assert query(db_file, "PRAGMA integrity_check") == [("ok",)]
    sessions = query(db_file, "SELECT id, ended IS NOT NULL FROM sessions")
    assert sessions == [(1, 1)]
    assert query(db_file, "SELECT DISTINCT session_id FROM samples") == [(1,)]
    names = {r[0] for r in query(db_file, "SELECT name FROM series")}
    assert {"system_cpu_percent", "system_memory_percent"} <= names
