"""Sessions: the browser's list shows what each recorded, edits persist, deleting removes exactly
one session's rows, and retention by age or size removes what its preview said it would."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.config import config_path, load_settings
from app.records import Sample
from app.runtime import Runtime
from app.storage.retention import DAY, db_usage, retention_plan, trim_to_size
from app.storage.sessions import (
    SessionError,
    delete_session,
    list_sessions,
    rename_session,
    set_session_note,
)
from app.storage.store import Store, connect
from collectors.system import SystemCollector
from tests.support import count, query, wait_until
from tests.support.clock import FakeClock
from tests.support.session_data import HOSTILE, MODELS, SERVER, record_session

TABLES = ("samples", "requests", "events", "alert_events")


@pytest.fixture
def store(db_file: Path):
    s = Store(db_file)
    s.start(session_name="first")
    yield s
    s.close()


def snapshot(db_file: Path, exclude: int) -> dict[str, list[tuple]]:
    """Every row of every table that does not belong to session ``exclude``."""
    out = {t: query(db_file, f"SELECT * FROM {t} WHERE session_id IS NOT ? ORDER BY rowid", (exclude,))
           for t in TABLES}
    out["sessions"] = query(db_file, "SELECT * FROM sessions WHERE id<>? ORDER BY id", (exclude,))
    out["series"] = query(db_file, "SELECT * FROM series ORDER BY id")
    return out


def test_list_shows_what_each_session_recorded(store: Store, db_file: Path) -> None:
    collector = SystemCollector()
    record_session(store, collector)
    first = store.session_id
    second = store.begin_session("second run")
    store.put(collector.poll())
    store.flush()
    conn = store.reader()
    sessions = list_sessions(conn)
    assert [(s.id, s.name, s.recording) for s in sessions] == [(second, "second run", True), (first, "first", False)]
    old = sessions[1]
    assert old.requests == count_where(db_file, "requests", first) == 8
    prompt, completion = query(db_file, "SELECT sum(prompt_tokens), sum(completion_tokens) FROM requests "
                                        "WHERE session_id=?", (first,))[0]
    assert (old.prompt_tokens, old.completion_tokens) == (prompt, completion) == (prompt, 32 + 32 + 32 + 298)
    assert old.alerts_fired == 1  # pending and resolved are not "fired"
    assert old.samples == count_where(db_file, "samples", first)
    assert old.servers == (SERVER,)
    assert set(old.models) == {"tiny-llama", "gemma-3-270m", "llama3.2", *MODELS, HOSTILE[0]}
    assert old.duration(time.time()) == pytest.approx(old.ended - old.started)
    new = sessions[0]
    assert new.samples == count_where(db_file, "samples", second) and new.requests == 0
    assert new.servers == () and new.models == ()
    # Sizes are estimates from average row sizes: more rows, more bytes, and they add up.
    assert old.approx_bytes > new.approx_bytes > 0
    assert old.approx_bytes + new.approx_bytes <= db_usage(conn).used_bytes
    conn.close()


def count_where(db_file: Path, table: str, session_id: int) -> int:
    return query(db_file, f"SELECT count(*) FROM {table} WHERE session_id=?", (session_id,))[0][0]


def test_rename_and_note_persist_and_unknown_session_is_an_error(store: Store, db_file: Path) -> None:
    sid = store.session_id
    rename_session(store, sid, "  llama vs qwen  ").result(10)
    set_session_note(store, sid, "GPU fan replaced; \"=quiet\" now").result(10)
    assert query(db_file, "SELECT name, note FROM sessions") == [("llama vs qwen", "GPU fan replaced; \"=quiet\" now")]
    with pytest.raises(SessionError, match="no session 42"):
        rename_session(store, 42, "x").result(10)


def test_delete_removes_that_sessions_rows_and_nothing_else(store: Store, db_file: Path) -> None:
    collector = SystemCollector()
    record_session(store, collector)
    victim = store.session_id
    # A sample stamped far outside the session (the clock jumped) still belongs to it.
    store.put([Sample("system_cpu_percent", 5.0, 1000.0)])
    store.begin_session("kept")
    record_session(store, collector, polls=2)
    assert all(count_where(db_file, t, victim) for t in TABLES)
    before = snapshot(db_file, victim)

    deleted = delete_session(store, victim).result(30)

    assert all(count_where(db_file, t, victim) == 0 for t in TABLES)
    assert query(db_file, "SELECT count(*) FROM sessions WHERE id=?", (victim,)) == [(0,)]
    assert deleted > 0 and snapshot(db_file, victim) == before
    with pytest.raises(SessionError, match="being recorded"):
        delete_session(store, store.session_id).result(10)
    assert snapshot(db_file, victim) == before


def test_age_retention_removes_what_the_preview_showed(db_file: Path) -> None:
    clock = FakeClock(100 * DAY)
    store = Store(db_file, clock=clock)
    store.start(session_name="ten days ago")
    real = SystemCollector().poll()

    def record(at: float) -> None:
        store.put(Sample(s.name, s.value, at, s.labels) for s in real if isinstance(s, Sample))

    record(clock.t)
    clock.advance(0.5 * DAY)
    store.begin_session("spans the cutoff")
    record(clock.t)
    clock.advance(9 * DAY)
    record(clock.t)
    clock.advance(0.25 * DAY)
    store.begin_session("today")
    record(clock.t)
    store.flush()
    conn = connect(db_file, readonly=True)
    plan = retention_plan(conn, keep_days=7, max_bytes=None, now=clock.t)
    effects = {s.name: plan.effect(s) for s in list_sessions(conn, now=clock.t)}
    assert plan.reason == "age" and effects == {"ten days ago": "all", "spans the cutoff": "part", "today": ""}

    store.apply_retention(7).result(30)
    names = dict(query(db_file, "SELECT name, id FROM sessions"))
    assert set(names) == {"spans the cutoff", "today"}
    per_session = dict(query(db_file, "SELECT session_id, count(*) FROM samples GROUP BY session_id"))
    n = sum(isinstance(s, Sample) for s in real)
    assert per_session == {names["spans the cutoff"]: n, names["today"]: n}  # its older half went
    assert retention_plan(conn, 7, None, now=clock.t).cutoff is None
    conn.close()
    store.close()


def test_size_retention_keeps_the_newest_data_under_the_cap(db_file: Path) -> None:
    clock = FakeClock(time.time())
    store = Store(db_file, clock=clock)
    store.start(session_name="old")
    real = [s for s in SystemCollector().poll() if isinstance(s, Sample)]

    def record(hours: int) -> None:  # the real machine's values, one poll a second
        for start in range(0, hours * 3600, 3600):
            store.put(Sample(s.name, s.value, clock.t + t, s.labels)
                      for t in range(start, start + 3600) for s in real)
        clock.advance(hours * 3600)

    record(2)
    store.end_session()
    clock.advance(3600)  # an hour without recording between the two
    store.begin_session("new")
    record(2)
    store.flush()
    conn = connect(db_file, readonly=True)
    used = db_usage(conn).used_bytes
    cap = int(used * 0.55)  # trimming to 90 % of that cuts inside the gap
    plan = retention_plan(conn, keep_days=None, max_bytes=cap, now=clock.t)
    effects = {s.name: plan.effect(s) for s in list_sessions(conn, now=clock.t)}
    assert plan.reason == "size" and effects == {"old": "all", "new": ""}

    deleted = store.call(lambda db: trim_to_size(db.conn, cap, clock.t, store.apply_retention_now)).result(60)
    assert deleted > 0 and db_usage(conn).used_bytes <= cap
    assert query(db_file, "SELECT name FROM sessions") == [("new",)]
    newest = query(db_file, "SELECT max(ts) FROM samples")[0][0]
    assert newest == pytest.approx(clock.t - 1)
    conn.close()
    store.close()


def test_the_store_applies_size_retention_on_its_own(db_file: Path) -> None:
    store = Store(db_file, retention_max_bytes=400_000, retention_check_s=0.05, flush_interval=0.05)
    store.start()
    real = [s for s in SystemCollector().poll() if isinstance(s, Sample)]
    t0 = time.time() - 7200
    store.put(Sample(s.name, s.value, t0 + t, s.labels) for t in range(7200) for s in real)
    store.flush()
    conn = connect(db_file, readonly=True)
    wait_until(lambda: db_usage(conn).used_bytes <= 400_000, timeout=30, what="size retention")
    assert query(db_file, "SELECT max(ts) FROM samples")[0][0] == pytest.approx(t0 + 7199)
    assert count(db_file, "samples") < 7200 * len(real)
    conn.close()
    store.close()


def test_retention_limits_come_from_the_config_file(db_file: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[general]\nretention_days = 14\nretention_gb = 2.5\n", encoding="utf-8")
    runtime = Runtime.create(db_file)
    try:
        assert (runtime.store.retention_days, runtime.store.retention_max_bytes) == (14.0, 2_500_000_000)
    finally:
        runtime.stop()
    path.write_text("[general]\nretention_gb = \"lots\"\n", encoding="utf-8")
    settings, problems = load_settings()
    assert settings.retention_gb is None and len(problems) == 1
    assert problems[0].startswith(f"{path} line 2: general.retention_gb must be a number of GB")
    path.write_text("[general]\nretention_gb = 0\n", encoding="utf-8")
    assert load_settings()[0].retention_gb is None
