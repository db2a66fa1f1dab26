"""Every export file, whatever text a session recorded (line breaks, quotes, commas, NUL, lone
surrogates, formula starts) in metric names, label keys and values, model names, errors and
messages: recorded through a real Store into a real SQLite file and exported, each file reads
back in Python's csv module as a table (every row as wide as its header), no cell starts
with a character a spreadsheet evaluates, and each text cell is the recorded text."""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.export import SAMPLE_FIXED, CsvExport, ExportRequest
from app.records import AlertEvent, Event, RequestRecord, Sample, labels_of
from app.storage.store import Store, connect
from tests.support import query
from tests.support.session_data import DANGEROUS_FIRST, unescape

NASTY = st.sampled_from(["\r", "\n", "\r\n", '"', ",", "\x00", "=", "+", "-", "@", "\t", "'", "'=", "\ud800",
                         "\udfff", "\ud83d\ude80", "=HYPERLINK(\"x\")", "\u2028", " "])
PIECES = NASTY | st.text(st.characters(exclude_categories=()), min_size=1, max_size=4)
TEXT = st.lists(PIECES, max_size=5).map("".join)
NAME = st.lists(PIECES, min_size=1, max_size=5).map("".join)  # never empty
KEYS = st.sampled_from(["model", "gpu", "server"]) | NAME
LABELS = st.dictionaries(KEYS, TEXT, max_size=3)
NUMBERS = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
REQUEST_NUMBERS = ("status", "stream", "prompt_tokens", "completion_tokens", "tokens_estimated", "bytes_in",
                   "bytes_out", "latency_s", "ttft_s", "tokens_per_s", "itl_mean_s", "itl_p50_s", "itl_p95_s",
                   "load_s", "prompt_eval_s", "eval_s")


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series=st.lists(st.tuples(NAME, LABELS, NUMBERS), min_size=1, max_size=4),
       requests=st.lists(st.tuples(TEXT, TEXT, TEXT), max_size=3),
       events=st.lists(st.tuples(TEXT, LABELS), max_size=2),
       alerts=st.lists(st.tuples(TEXT, TEXT, LABELS), max_size=2))
def test_every_export_file_round_trips_any_text(series, requests, events, alerts, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("export")
    db = folder / "llmmon.db"
    store = Store(db)
    store.start(session_name="hostile")
    now = 1_750_000_000.0
    store.put(Sample(name, float(value), now + i, labels_of(**labels)) for i, (name, labels, value) in
              enumerate(series))
    store.put(RequestRecord(ts_start=now + i, server="ollama@127.0.0.1:11434", endpoint="/api/chat", model=model,
                            client=client, status=500, error=error)
              for i, (model, client, error) in enumerate(requests))
    store.put(Event("model_loaded", "ollama@127.0.0.1:11434", message, now + i, labels_of(**labels))
              for i, (message, labels) in enumerate(events))
    store.put(AlertEvent(rule, "firing", "warning", now + i, labels_of(**labels), 1.5, message)
              for i, (rule, message, labels) in enumerate(alerts))
    sid = store.session_id
    store.close()

    conn = connect(db, readonly=True)
    try:
        result = CsvExport(conn, ExportRequest(sid, folder / "out")).run()
    finally:
        conn.close()

    files = {name: csv_rows(folder / "out" / name) for name in CsvExport.FILES}
    for name, rows in files.items():
        header = rows[0]
        assert all(len(row) == len(header) for row in rows), name  # not one ragged row
        assert len(rows) - 1 == result.rows[name]
        numeric = {"samples.csv": {"value"}, "samples_wide.csv": set(header[2:]),
                   "requests.csv": set(REQUEST_NUMBERS), "alerts.csv": {"value"}}.get(name, set())
        for row in rows:
            for column, cell in zip(header, row, strict=True):
                if row is not header and column in numeric and cell:
                    float(cell)  # a number, nothing else
                else:
                    assert not cell.startswith(DANGEROUS_FIRST), (name, column, cell)

    # Each text cell is the recorded text: what the database holds, and, for any text UTF-8 can
    # carry, exactly what was recorded (lone surrogates are the store's to clean).
    def sample(name: str, labels: dict[str, str], value: float) -> tuple[object, ...]:
        return name, sorted((k, v) for k, v in labels.items() if v), value

    def column_key(column: str) -> str:
        return column[6:] if column.startswith("label_") and column[6:] in SAMPLE_FIXED else column

    header, *rows = files["samples.csv"]
    keys = [column_key(unescape(c)) for c in header[3:-1]]
    from_csv = {round(instant(r[0]) - now): sample(unescape(r[2]), dict(zip(keys, map(unescape, r[3:-1]), strict=True)),
                                                   float(r[-1])) for r in rows}
    from_db = {round(ts - now): sample(name, json.loads(labels), value) for name, labels, ts, value in
               query(db, "SELECT s.name, s.labels, p.ts, p.value FROM samples p JOIN series s ON s.id = p.series_id")}
    assert from_csv == from_db
    for i, (name, labels, value) in enumerate(series):
        if utf8((name, labels)):
            assert from_csv[i] == sample(name, labels, float(value))

    header, *rows = files["requests.csv"]
    got = [tuple(unescape(r[header.index(c)]) for c in ("model", "client", "error")) for r in rows]
    assert got == query(db, "SELECT model, client, error FROM requests ORDER BY ts_start")
    assert [g for g, r in zip(got, requests, strict=True) if utf8(r)] == [r for r in requests if utf8(r)]
    header, *rows = files["events.csv"]
    messages = [unescape(r[header.index("message")]) for r in rows]
    assert messages == [m for (m,) in query(db, "SELECT message FROM events ORDER BY ts")]
    assert [g for g, (m, _) in zip(messages, events, strict=True) if utf8(m)] == [m for m, _ in events if utf8(m)]
    header, *rows = files["alerts.csv"]
    got = [(unescape(r[2]), unescape(r[-1])) for r in rows]
    assert got == query(db, "SELECT rule, message FROM alert_events ORDER BY ts")
    originals = [(rule, m) for rule, m, _ in alerts]
    assert [g for g, o in zip(got, originals, strict=True) if utf8(o)] == [o for o in originals if utf8(o)]
    event(f"texts UTF-8 cannot carry: {not all(utf8(x) for x in (series, requests, events, alerts))}")


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utf8(value: object) -> bool:
    """Whether every text in ``value`` (nested tuples, lists, dicts) can be written as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
