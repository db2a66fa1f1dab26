"""The store's put path against anything a collector, the proxy or a plug-in could hand it: every
record is stored (made valid) or counted as dropped, and the writer keeps writing afterwards.
Real SQLite file, real writer thread."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.records import (
    MAX_CONTENT_CHARS,
    MAX_LABEL_CHARS,
    MAX_MESSAGE_CHARS,
    AlertEvent,
    Event,
    RequestRecord,
    Sample,
)
from app.storage.store import Store
from tests.support import count, query, wait_until

TABLES = ("samples", "requests", "events", "alert_events")

# Any code point, lone surrogates included (what json.loads makes of "\ud83d"), sometimes long.
any_text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=40),
                     st.builds(lambda c, n: c * n, st.characters(exclude_categories=()), st.integers(250, 5000)))
any_number = st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.sampled_from([10**400, -(10**19), 2**63]),
                       st.none(), st.booleans())
labels = st.lists(st.tuples(any_text, any_text), max_size=3).map(tuple)

samples = st.builds(Sample, any_text, any_number, any_number, labels)
requests = st.builds(RequestRecord, ts_start=any_number, server=any_text, endpoint=any_text, model=any_text,
                     client=any_text, status=any_number, prompt_tokens=any_number, completion_tokens=any_number,
                     ttft_s=any_number, latency_s=any_number, server_tokens_per_s=any_number,
                     bytes_in=any_number, error=any_text, prompt_text=st.one_of(st.none(), any_text))
events = st.builds(Event, any_text, any_text, any_text, any_number, labels)
alerts = st.builds(AlertEvent, any_text, any_text, any_text, any_number, labels, any_number, any_text)
batches = st.lists(st.one_of(samples, requests, events, alerts), min_size=1, max_size=12)


def stored_rows(path: Path) -> int:
    return sum(count(path, t) for t in TABLES)


@pytest.fixture(scope="module")
def garbage_store(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("garbage") / "garbage.db", flush_interval=0.05)
    store.start()
    yield store
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches, marker=st.integers(0, 2**40))
def test_any_record_is_stored_or_counted_and_writing_goes_on(garbage_store: Store, batch: list, marker: int) -> None:
    store, path = garbage_store, garbage_store.path
    rows_before, dropped_before = stored_rows(path), store.status.dropped_rows
    store.put(batch)
    store.put([Sample("marker", float(marker), 1.0)])  # a normal sample after the garbage
    store.flush()
    status = store.status
    assert status.ok and not status.stopped and store.running
    stored = stored_rows(path) - rows_before - 1
    dropped = status.dropped_rows - dropped_before
    assert stored + dropped == len(batch)  # nothing vanished uncounted
    assert query(path, "SELECT p.value FROM samples p JOIN series s ON s.id=p.series_id "
                       "WHERE s.name='marker' ORDER BY p.rowid DESC LIMIT 1") == [(float(marker),)]


def test_what_was_stored_is_valid_bounded_text_and_finite_numbers(garbage_store: Store) -> None:
    # Runs after the property test on the same file: reading every text column back as UTF-8
    # fails if anything invalid got in.
    conn = sqlite3.connect(f"file:{garbage_store.path}?mode=ro", uri=True)
    try:
        for name, labels_text in conn.execute("SELECT name, labels FROM series"):
            assert len(name) <= MAX_LABEL_CHARS
            assert all(len(k) <= MAX_LABEL_CHARS and len(v) <= MAX_LABEL_CHARS
                       for k, v in json.loads(labels_text).items())
        for (value,) in conn.execute("SELECT value FROM samples"):
            assert isinstance(value, float) and math.isfinite(value)
        for model, error, prompt in conn.execute("SELECT model, error, prompt_text FROM requests"):
            assert len(model) <= MAX_LABEL_CHARS and len(error) <= MAX_MESSAGE_CHARS
            assert prompt is None or len(prompt) <= MAX_CONTENT_CHARS
        for (message,) in conn.execute("SELECT message FROM events UNION ALL SELECT message FROM alert_events"):
            assert len(message) <= MAX_MESSAGE_CHARS
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_the_reported_bad_values_are_stored_cleaned(db_file: Path) -> None:
    """Issue 11, item 1: a lone surrogate in a model name and eval_count 1e19 used to kill the
    writer thread; now the request is stored with the name repaired and the count unset."""
    store = Store(db_file, flush_interval=0.05)
    store.start()
    store.put([RequestRecord(ts_start=1.0, server="ollama", endpoint="/api/chat", model="x \ud83d",
                             completion_tokens=10_000_000_000_000_000_000)])
    store.put([Sample("after", 1.0, 2.0)])
    store.flush()
    assert query(db_file, "SELECT model, completion_tokens FROM requests") == [("x \ufffd", None)]
    assert count(db_file, "samples") == 1
    assert "completion_tokens not a 64-bit integer" in store.status.drops
    store.close()


class _Exploding:
    """A label whose text conversion ends the thread it runs on (a BaseException, as a bug or a
    plug-in could raise)."""

    def __str__(self) -> str:
        raise SystemExit("boom")


def test_a_writer_that_dies_anyway_says_so_and_close_does_not_hang(db_file: Path) -> None:
    store = Store(db_file, flush_interval=0.05)
    store.start()
    store.put([Sample("x", 1.0, 1.0, ((_Exploding(), "v"),))])  # type: ignore[arg-type]
    wait_until(lambda: not store.running, what="the writer to stop")
    assert "the database writer stopped" in store.failure
    assert store.status.stopped and not store.status.ok
    store.put([Sample("y", 1.0, 1.0)])
    assert store.status.dropped_rows == 1  # what arrives afterwards is counted, not queued forever
    with pytest.raises(RuntimeError):
        store.flush(timeout=5)
    store.close()  # returns at once: no 30 s wait on a dead thread
