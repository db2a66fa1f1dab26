"""Issue 11 end to end, as a user sees it: ``main.py --headless`` (a subprocess) recording from
simulated servers and through its real metering proxy, and ``main.py export``. No input may stop
the recording, falsify a record, or get a traceback in front of the user."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlite_utils

from app.records import Sample
from app.storage.schema import SCHEMA_VERSION, migrate
from app.storage.store import Store
from tests.sim.ollama import SimOllama
from tests.sim.upstream import RECORDINGS, SimUpstream
from tests.support import count, query, wait_until
from tests.support.headless import Headless, free_port, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[SimUpstream]:
    """An Ollama-like upstream whose non-streamed chat answer reports eval_count 1e19."""
    answer = json.loads((RECORDINGS / "ollama_chat.json").read_text())
    answer["eval_count"] = 10_000_000_000_000_000_000
    crafted = tmp_path / "huge_eval_count.json"
    crafted.write_text(json.dumps(answer))
    up = SimUpstream({"/api/chat": ("ollama_chat_stream.ndjson", str(crafted), False)}).start()
    yield up
    up.stop()


def proxied_config(upstream: SimUpstream, port: int, extra: str = "") -> None:
    write_config(f'[general]\ndiscover_local = false\n\n[proxy]\nenabled = true\n\n'
                 f'[[proxy.routes]]\nupstream = "{upstream.url}"\nlisten = {port}\nkind = "ollama"\n{extra}')


def chat(port: int, model_json: str) -> httpx.Response:
    body = f'{{"model": {model_json}, "messages": [{{"role": "user", "content": "hi"}}], "stream": false}}'
    return httpx.post(f"http://127.0.0.1:{port}/api/chat", content=body.encode(), timeout=10)


def test_a_lone_surrogate_and_a_huge_count_do_not_stop_the_recording(db_file: Path, upstream: SimUpstream) -> None:
    port = free_port()
    proxied_config(upstream, port)
    headless = Headless(db_file)
    try:
        wait_until(lambda: count(db_file, "samples") > 0, timeout=20, what="first samples")
        assert chat(port, '"x \\ud83d"').status_code == 200  # the JSON escape of a lone surrogate
        wait_until(lambda: count(db_file, "requests") == 1, timeout=20, what="the bad request's row")
        after_bad = count(db_file, "samples")
        wait_until(lambda: count(db_file, "samples") > after_bad, timeout=20, what="rows after the bad value")
        assert chat(port, '"llama3.2"').status_code == 200
        wait_until(lambda: count(db_file, "requests") == 2, timeout=20, what="a normal request's row")
        rc, out, err = headless.stop()
    finally:
        headless.kill()
    assert rc == 0 and "all data written" in out, err
    assert "Traceback" not in err
    rows = query(db_file, "SELECT model, completion_tokens, prompt_tokens FROM requests ORDER BY id")
    assert rows == [("x \ufffd", None, 26), ("llama3.2", None, 26)]
    assert query(db_file, "PRAGMA integrity_check") == [("ok",)]


def test_garbage_values_and_a_series_flood_are_dropped_counted_and_announced(db_file: Path,
                                                                             upstream: SimUpstream) -> None:
    ollama = SimOllama(loaded=[])
    model = SimOllama.partially_offloaded_model()
    doubled = {**copy.deepcopy(model), "name": "doubled:1b", "model": "doubled:1b", "size_vram": 2 * model["size"]}
    negative = {**copy.deepcopy(model), "name": "negative:1b", "model": "negative:1b", "size_vram": -1}
    ollama.load(doubled)
    ollama.load(negative)
    port = free_port()
    with ollama:
        proxied_config(upstream, port, f'\n[[servers]]\nurl = "{ollama.url}"\nkind = "ollama"\nname = "sim"\n')
        headless = Headless(db_file)
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(260):  # ever-new model names, as a misbehaving client may send
                    body = json.dumps({"model": f"m{i}", "messages": [], "stream": False})
                    assert client.post(f"http://127.0.0.1:{port}/api/chat", content=body).status_code == 200
            wait_until(lambda: query(db_file, "SELECT count(*) FROM events WHERE kind='series_limit'")[0][0] >= 1,
                       timeout=30, what="the series_limit event")
            wait_until(lambda: query(db_file, "SELECT count(*) FROM series WHERE name='ollama_model_size_bytes'")
                       [0][0] == 2, timeout=20, what="the Ollama models' sizes")
            rc, out, err = headless.stop()
        finally:
            headless.kill()
    assert rc == 0 and "Traceback" not in err
    # What the user would have charted: no share above 1, no negative VRAM, no negative or absurd value.
    shares = query(db_file, "SELECT p.value FROM samples p JOIN series s ON s.id=p.series_id "
                            "WHERE s.name='ollama_model_gpu_share_ratio'")
    assert shares == []  # VRAM twice the model's size is garbage, and -1 bytes gives no share at all
    assert query(db_file, "SELECT count(*) FROM samples WHERE value < 0 OR value > 1e15") == [(0,)]
    vram = query(db_file, "SELECT DISTINCT s.labels FROM samples p JOIN series s ON s.id=p.series_id "
                          "WHERE s.name='ollama_model_vram_bytes'")
    assert vram == [(f'{{"model":"doubled:1b","server":"ollama@127.0.0.1:{ollama.port}"}}',)]
    per_model = query(db_file, "SELECT count(*) FROM series WHERE name='llm_tokens_per_second'")[0][0]
    assert 0 < per_model <= 200 < 260  # the per-source cap held
    assert count(db_file, "requests") == 260  # requests are records, not series: all kept
    message = query(db_file, "SELECT message FROM events WHERE kind='series_limit'")[0][0]
    assert "more than 200 new series within a minute" in message
    assert "negative value" in err and "new series over the per-minute limit" in err  # logged once each


def test_a_session_left_recording_by_kill_9_is_closed_at_its_last_record(db_file: Path) -> None:
    write_config("[general]\ndiscover_local = false\n")
    crashed = Headless(db_file)
    wait_until(lambda: count(db_file, "samples") >= 30, timeout=20, what="samples before the crash")
    os.kill(crashed.proc.pid, signal.SIGKILL)
    crashed.proc.communicate()
    assert query(db_file, "SELECT ended FROM sessions") == [(None,)]  # as the crash left it
    last = query(db_file, "SELECT max(ts) FROM samples WHERE session_id=1")[0][0]
    last = max(last, query(db_file, "SELECT coalesce(max(ts), 0) FROM events WHERE session_id=1")[0][0])
    headless = Headless(db_file)
    try:
        rc, _out, err = headless.stop()
    finally:
        headless.kill()
    assert rc == 0, err
    sessions = query(db_file, "SELECT id, ended FROM sessions ORDER BY id")
    assert sessions[0] == (1, last)
    assert sessions[1][1] is not None and len(sessions) == 2


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded(db: Path) -> None:
    store = Store(db)
    store.start()
    store.put(Sample(f"metric_{i}", float(j), float(j)) for i in range(100) for j in range(300))
    store.close()


def _garbage(db: Path) -> str:
    db.write_bytes(os.urandom(64 * 1024))
    return "it is not an SQLite database"


def _truncated(db: Path) -> str:
    _recorded(db)
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    return "the file is damaged"


def _future(db: Path) -> str:
    sdb = sqlite_utils.Database(db)
    migrate(sdb)
    sdb.execute("UPDATE schema_version SET version=?", [SCHEMA_VERSION + 1])
    sdb.conn.commit()
    sdb.close()
    return f"it was written by a newer llmmon (database schema version {SCHEMA_VERSION + 1}"


def _foreign(db: Path) -> str:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.commit()
    conn.close()
    return "it is another program's SQLite database"


@pytest.mark.parametrize("spoil", [_garbage, _truncated, _future, _foreign], ids=lambda f: f.__name__[1:])
def test_an_unusable_database_is_refused_with_a_message_and_left_untouched(db_file: Path, tmp_path: Path,
                                                                            spoil) -> None:
    problem = spoil(db_file)
    for name in ("-wal", "-shm"):  # as after a clean stop: only the file itself
        Path(str(db_file) + name).unlink(missing_ok=True)
    before = _sha(db_file)
    env = {**os.environ, "QT_QPA_PLATFORM": ""}
    for argv in (["--headless", "--db", str(db_file)],
                 ["export", "--db", str(db_file), "--out", str(tmp_path / "out")]):
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert f"llmmon cannot use the database {db_file}: {problem}" in done.stderr
        assert "--db PATH" in done.stderr and "Traceback" not in done.stderr
    assert _sha(db_file) == before
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
