"""One recorder per database: the lock file, and the real ``main.py`` recorders that take it
(--headless and proxy refuse a database another llmmon records into; a killed one does not
block the next start). Also: the global options work after the subcommand."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import main
from app.recorder_lock import AlreadyRecording, RecorderLock, lock_path
from tests.support import count, query, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {"QT_QPA_PLATFORM": ""}  # recorders need no display


def llmmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=120)


def start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline()]
    while lines[-1] and "recording to" not in lines[-1]:  # the proxy says where it listens first
        lines.append(proc.stdout.readline())
    assert lines[-1], "".join(lines) + proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_lock_is_refused_with_the_first_ones_details_until_it_is_released(tmp_path: Path) -> None:
    db = tmp_path / "data" / "llmmon.db"
    first = RecorderLock(db, "headless")
    first.acquire()
    with pytest.raises(AlreadyRecording) as refused:
        RecorderLock(db, "gui").acquire()
    assert refused.value.holder.pid == os.getpid()
    assert refused.value.holder.mode == "headless"
    assert str(refused.value).startswith(
        f"llmmon is already recording to {db}: a headless llmmon recorder (pid {os.getpid()}, since ")
    with RecorderLock(tmp_path / "other.db", "gui"):  # another database is another lock
        pass
    first.release()
    with RecorderLock(db, "gui"):
        assert lock_path(db).exists()


def test_a_killed_recorder_leaves_its_lock_file_but_not_its_lock(tmp_path: Path) -> None:
    db = tmp_path / "llmmon.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from app.recorder_lock import RecorderLock; "
         f"lock = RecorderLock(Path({str(db)!r}), 'gui'); lock.acquire(); print('locked', flush=True); "
         "sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(AlreadyRecording) as refused:
            RecorderLock(db, "headless").acquire()
        assert refused.value.holder.pid == holder.pid
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, as in a crash
        holder.wait(10)
    assert lock_path(db).read_text()  # the stale file is still there...
    with RecorderLock(db, "headless"):  # ...and does not block anyone
        pass


def test_a_second_recorder_on_the_same_database_is_refused_and_the_first_records_on(tmp_path: Path) -> None:
    db = tmp_path / "llmmon.db"
    first = start("--headless", "--db", str(db))
    try:
        second = llmmon("--headless", "--db", str(db))
        assert second.returncode == main.EXIT_REFUSED
        assert f"llmmon is already recording to {db}: a headless llmmon recorder (pid {first.pid}, since " \
            in second.stderr
        assert "Stop that one first, or record into another database with --db PATH." in second.stderr
        # The proxy records too; its --db, given after the subcommand, is the one it locks.
        proxy = llmmon("proxy", "--db", str(db), "--upstream", "http://127.0.0.1:9", "--listen", str(free_port()))
        assert proxy.returncode == main.EXIT_REFUSED
        assert f"(pid {first.pid}, since " in proxy.stderr
        # A benchmark run records too; listing the stored benchmarks only reads.
        bench = llmmon("bench", "--db", str(db), "--server", "http://127.0.0.1:9", "--models", "m", "--prompt", "hi")
        assert bench.returncode == main.EXIT_REFUSED and f"(pid {first.pid}, since " in bench.stderr
        listing = llmmon("bench", "--list", "--db", str(db))
        assert listing.returncode == 0, listing.stderr
        rows = count(db, "samples")
        wait_until(lambda: count(db, "samples") > rows, timeout=20, what="the first recorder to go on writing")
    finally:
        out = stop(first)
    assert "all data written" in out
    assert query(db, "SELECT count(*) FROM sessions") == [(1,)]  # the refused ones never opened one


def test_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    db = tmp_path / "proxy.db"
    proxy = start("proxy", "--db", str(db), "--session-name", "after the command",
                  "--upstream", "http://127.0.0.1:9", "--listen", str(free_port()))
    stop(proxy)
    assert query(db, "SELECT name FROM sessions") == [("after the command",)]
    before = llmmon("--db", str(db), "export", "--out", str(tmp_path / "a"))
    after = llmmon("export", "--out", str(tmp_path / "b"), "--db", str(db))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert (tmp_path / "a" / "samples.csv").read_bytes() == (tmp_path / "b" / "samples.csv").read_bytes()
