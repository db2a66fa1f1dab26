"""CSV export: what a session recorded comes back from the files (read with the csv module),
text is safe to open in a spreadsheet, only the chosen session and range are written, and
cancelling leaves nothing behind."""
from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import openai
import pytest

from app.config import ProxyRoute, Settings
from app.export import CsvExport, ExportCancelled, ExportRequest, iso_times
from app.records import Sample
from app.runtime import Runtime
from app.storage.store import Store, connect
from collectors.system import SystemCollector
from tests.sim.upstream import SimUpstream
from tests.support import free_port, query, wait_until
from tests.support.session_data import DANGEROUS_FIRST, HOSTILE, MODELS, record_session, unescape


@pytest.fixture
def recorded(db_file: Path):
    """Two sessions recorded with the real system collector; the first is exported."""
    store = Store(db_file)
    store.start(session_name="exported")
    collector = SystemCollector()
    record_session(store, collector)
    first = store.session_id
    store.begin_session("other")
    record_session(store, collector, polls=2)
    store.close()
    return db_file, first


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def export(db_file: Path, request: ExportRequest, progress=None):
    conn = connect(db_file, readonly=True)
    try:
        return CsvExport(conn, request, progress).run()
    finally:
        conn.close()


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_samples_round_trip_with_counts_values_labels_and_times(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    result = export(db_file, ExportRequest(sid, tmp_path / "out"))
    header, rows = read(tmp_path / "out" / "samples.csv")
    stored = query(db_file, "SELECT s.name, s.labels, p.ts, p.value FROM samples p JOIN series s "
                            "ON s.id = p.series_id WHERE p.session_id=?", (sid,))
    assert len(rows) == len(stored) == result.rows["samples.csv"]
    assert header[:3] == ["ts_utc", "ts_local", "metric"] and header[-1] == "value"
    label_keys = header[3:-1]
    assert set(label_keys) == {"core", "model", "mount", "server"}

    def key(metric: str, labels: dict, value: float) -> tuple:
        return metric, tuple(sorted(labels.items())), value

    from_csv: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        labels = {k: unescape(row[k]) for k in label_keys if row[k] != ""}
        assert row["ts_utc"].endswith("Z")
        t = instant(row["ts_utc"])
        assert instant(row["ts_local"]) == pytest.approx(t, abs=1e-6)
        local = datetime.fromisoformat(row["ts_local"])
        assert local.utcoffset() == datetime.fromtimestamp(t).astimezone().utcoffset()
        from_csv[key(unescape(row["metric"]), labels, float(row["value"]))].append(t)
    from_db: dict[tuple, list[float]] = defaultdict(list)
    for name, labels, ts, value in stored:
        from_db[key(name, json.loads(labels), value)].append(ts)
    assert from_csv.keys() == from_db.keys()
    for k, stamps in from_db.items():
        assert sorted(from_csv[k]) == pytest.approx(sorted(stamps), abs=1e-6)  # to the microsecond
    # Unicode and labels with commas, quotes and newlines come back whole.
    assert {r["model"] for r in rows if r["metric"] == "llm_request_tokens_per_second"} == \
        {m if not m.startswith(DANGEROUS_FIRST) else "'" + m for m in MODELS}
    # A negative number stays a number; the same text in a label is escaped.
    expiring = [r for r in rows if r["metric"] == "ollama_model_expires_in_seconds"]
    assert [(r["value"], r["model"]) for r in expiring] == [("-12.5", "'" + HOSTILE[0])]


def test_no_text_cell_can_start_a_formula(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    export(db_file, ExportRequest(sid, tmp_path))
    request_numbers = {"status", "stream", "prompt_tokens", "completion_tokens", "tokens_estimated",
                       "bytes_in", "bytes_out", "latency_s"}
    escaped = 0
    for name in ("samples.csv", "samples_wide.csv", "requests.csv", "alerts.csv", "events.csv"):
        header, rows = read(tmp_path / name)
        assert not any(c.startswith(DANGEROUS_FIRST) for c in header)
        numeric = {"samples.csv": {"value"}, "samples_wide.csv": set(header[2:]),
                   "requests.csv": request_numbers, "alerts.csv": {"value"}}.get(name, set())
        for row in rows:
            for column, cell in row.items():
                if column in numeric and cell:
                    float(cell)  # numbers are plain numbers
                    continue
                assert not cell.startswith(DANGEROUS_FIRST), (name, column, cell)
                escaped += cell.startswith("'")
    assert escaped >= len(HOSTILE) * 2


def test_requests_alerts_and_events_round_trip(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    export(db_file, ExportRequest(sid, tmp_path))
    _, requests = read(tmp_path / "requests.csv")
    stored = query(db_file, "SELECT ts_start, model, prompt_tokens, completion_tokens, error, status, "
                            "response_text FROM requests WHERE session_id=? ORDER BY ts_start", (sid,))
    assert len(requests) == len(stored)
    for row, (ts, model, prompt, completion, error, status, text) in zip(requests, stored, strict=True):
        assert instant(row["ts_utc"]) == pytest.approx(ts, abs=1e-6)
        assert unescape(row["model"]) == model
        assert int(row["prompt_tokens"]) == prompt and int(row["status"]) == status
        assert (int(row["completion_tokens"]) if row["completion_tokens"] else None) == completion
        assert unescape(row["error"]) == error and (unescape(row["response_text"]) or None) == text
    assert {r["model"] for r in requests} >= {"tiny-llama", "gemma-3-270m", "llama3.2"}

    header, alerts = read(tmp_path / "alerts.csv")
    assert header == ["ts_utc", "ts_local", "rule", "state", "severity", "gpu", "model", "value", "message"]
    assert [(a["state"], a["model"], float(a["value"]), unescape(a["message"])) for a in alerts] == \
        [(s, MODELS[2], 91.5, HOSTILE[i]) for i, s in enumerate(["pending", "firing", "resolved"])]
    _, events = read(tmp_path / "events.csv")
    assert [(e["kind"], e["model"], e["message"]) for e in events] == [("model_loaded", MODELS[0], "'" + HOSTILE[3])]


def test_wide_file_holds_the_mean_of_each_bucket(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    export(db_file, ExportRequest(sid, tmp_path, resolution_s=0.5))
    header, rows = read(tmp_path / "samples_wide.csv")
    stored = query(db_file, "SELECT s.name, s.labels, p.ts, p.value FROM samples p JOIN series s "
                            "ON s.id = p.series_id WHERE p.session_id=?", (sid,))

    def quote(v: str) -> str:  # Prometheus' escaping of label values, and CR
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")

    buckets: dict[tuple[float, str], list[float]] = defaultdict(list)
    for name, labels, ts, value in stored:
        pairs = sorted(json.loads(labels).items())
        column = name + ("{" + ",".join(f'{k}="{quote(v)}"' for k, v in pairs) + "}" if pairs else "")
        buckets[(int(ts / 0.5) * 0.5, column)].append(value)
    columns = [unescape(c) for c in header[2:]]
    assert len(columns) == len({c for _, c in buckets})
    cells = 0
    for row in rows:
        t = instant(row["ts_utc"])
        for raw, column in zip(header[2:], columns, strict=True):
            if row[raw] == "":
                continue
            cells += 1
            mine = [v for (b, c), vs in buckets.items() for v in vs
                    if math.isclose(b, t, abs_tol=1e-6) and c == column]
            assert float(row[raw]) == pytest.approx(sum(mine) / len(mine))
    assert cells == len(buckets)


def test_metric_pattern_and_time_range(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    stored = query(db_file, "SELECT p.ts FROM samples p JOIN series s ON s.id = p.series_id "
                            "WHERE p.session_id=? AND s.name LIKE 'system_cpu%' ORDER BY p.ts", (sid,))
    t_from = stored[len(stored) // 3][0]
    export(db_file, ExportRequest(sid, tmp_path, t_from=t_from, metrics="system_cpu_*, nothing_else"))
    header, rows = read(tmp_path / "samples.csv")
    assert header == ["ts_utc", "ts_local", "metric", "core", "value"]
    assert {r["metric"] for r in rows} == {"system_cpu_percent", "system_cpu_core_percent"}
    assert len(rows) == sum(1 for (ts,) in stored if ts >= t_from)
    _, wide = read(tmp_path / "samples_wide.csv")
    assert all(instant(r["ts_utc"]) >= int(t_from / 10) * 10 for r in wide)


def test_cancel_leaves_nothing_behind(recorded, tmp_path: Path) -> None:
    db_file, sid = recorded
    out = tmp_path / "out"
    conn = connect(db_file, readonly=True)
    job = CsvExport(conn, ExportRequest(sid, out), progress=lambda fraction, what: job.cancel())
    with pytest.raises(ExportCancelled):
        job.run()
    conn.close()
    assert list(out.iterdir()) == []


class CancelAtStep:
    """An SQLite progress handler that presses Cancel at the ``at``-th check of the database's
    virtual machine, while a statement runs (as the dialog's button does from the GUI thread:
    ``cancel()`` interrupts the running statement); ``at=0`` only counts the checks."""

    def __init__(self, at: int = 0) -> None:
        self.at, self.steps = at, 0
        self.job: CsvExport | None = None

    def __call__(self) -> int:
        self.steps += 1
        if self.steps == self.at and self.job is not None:
            self.job.cancel()
            return 1  # what the interrupt does to the statement running now
        return 0


def test_cancel_while_any_statement_runs_is_a_clean_cancel(recorded, tmp_path: Path) -> None:
    """Cancel can land while any statement of the export runs, the opening BEGIN included
    (on a busy machine the GUI thread presses it while the worker has just started): the
    export then ends as cancelled with nothing written, never with SQLite's "interrupted"."""
    db_file, sid = recorded
    counter = CancelAtStep()
    conn = connect(db_file, readonly=True)
    conn.set_progress_handler(counter, 1)
    export_steps = CsvExport(conn, ExportRequest(sid, tmp_path / "whole")).run()
    conn.close()
    assert export_steps.rows["samples.csv"] > 0 and counter.steps > 100
    late = CsvExport(conn, ExportRequest(sid, tmp_path / "late"))
    late.cancel()  # pressed just as an export ended and closed its connection: no error
    assert late.cancelled
    for at in sorted({*range(1, 40), *range(40, counter.steps, max(1, counter.steps // 40))}):
        out = tmp_path / f"cancelled-{at}"
        conn = connect(db_file, readonly=True)
        cancel = CancelAtStep(at)
        conn.set_progress_handler(cancel, 1)
        cancel.job = CsvExport(conn, ExportRequest(sid, out))
        with pytest.raises(ExportCancelled):
            cancel.job.run()
        conn.close()
        assert not out.exists() or list(out.iterdir()) == [], at


def test_unknown_session_and_unwritable_folder_are_clear_errors(recorded, tmp_path: Path) -> None:
    db_file, _ = recorded
    with pytest.raises(LookupError, match="no session 99"):
        export(db_file, ExportRequest(99, tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OSError):
        export(db_file, ExportRequest(1, blocked))


@pytest.fixture
def paris_time(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_local_times_follow_daylight_saving_inside_one_chunk(paris_time, db_file: Path, tmp_path: Path) -> None:
    # Paris moved its clocks forward at 2024-03-31 01:00 UTC: one chunk spans the change.
    change = datetime.fromisoformat("2024-03-31T01:00:00+00:00").timestamp()
    stamps = [change + k * 600.5 for k in range(-6, 6)]
    utc, local = iso_times(stamps)
    assert local == [datetime.fromtimestamp(t).astimezone().isoformat(timespec="microseconds") for t in stamps]
    assert {s[-6:] for s in local} == {"+01:00", "+02:00"}
    assert [datetime.fromisoformat(u).timestamp() for u in utc] == pytest.approx(stamps, abs=1e-6)

    store = Store(db_file, clock=lambda: change)  # a session recorded that night
    store.start()
    store.put(Sample("system_cpu_percent", float(i), t) for i, t in enumerate(stamps))
    sid = store.session_id
    store.close()
    export(db_file, ExportRequest(sid, tmp_path))
    _, rows = read(tmp_path / "samples.csv")
    assert [r["ts_local"] for r in rows] == local


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def test_a_model_named_like_a_formula_through_the_proxy_exports_cleanly(db_file: Path, tmp_path: Path) -> None:
    """Issue 11, item 2: a client names its model ``m\\r=1+2``; the proxy measures the request
    and the request statistics label their series with that name. Every export file still opens
    as a clean table in Python's csv module, and no cell is a formula."""
    hostile = "m\r=1+2"
    with SimUpstream() as up:
        settings = Settings(discover_local=False, system_interval_s=60)
        settings.proxy.enabled = True
        settings.proxy.routes = [ProxyRoute(up.url, port := free_port(), kind="vllm")]
        runtime = Runtime.create(db_file, settings=settings)
        runtime.start()
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model=hostile, messages=[{"role": "user", "content": "hi"}])
            wait_until(lambda: any(k[0] == "llm_request_tokens_per_second" for k in runtime.hub.buffers.keys()),
                       what="the request's samples")
            sid = runtime.store.session_id
        finally:
            runtime.stop()
    export(db_file, ExportRequest(sid, tmp_path))
    labelled = query(db_file, "SELECT labels FROM series WHERE name='llm_request_tokens_per_second'")
    model = json.loads(labelled[0][0])["model"]  # what was recorded (the proxy's own reading)
    assert "\r" in model
    for name in CsvExport.FILES:
        rows = read_rows(tmp_path / name)
        assert {len(r) for r in rows} == {len(rows[0])}, name  # no ragged row
        assert not [c for r in rows for c in r if c.startswith(DANGEROUS_FIRST)], name
    header, samples = read(tmp_path / "samples.csv")
    assert {unescape(r["model"]) for r in samples if r["metric"] == "llm_request_tokens_per_second"} == {model}
    _, requests = read(tmp_path / "requests.csv")
    assert [unescape(r["model"]) for r in requests] == [hostile]
