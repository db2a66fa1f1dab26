"""Usage totals over several sessions and local days, computed by the app from raw rows and from
its rollup, against sums computed here independently from the rows; and the rule that a request
seen by the proxy and by the server's own counters counts once."""
from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from app.records import RequestRecord, Sample, labels_of
from app.storage.sessions import delete_session
from app.storage.store import Store
from app.usage.report import REQUESTS, SERVER, usage_report
from app.usage.rollup import UsageRollup, rolled_until
from collectors.llamacpp import LlamaCppCollector
from collectors.vllm import VllmCollector
from tests.sim.upstream import RECORDINGS as STREAMS
from tests.sim.vllm import SimVllm
from tests.support import query
from tests.support.clock import FakeClock
from tests.support.timezones import local_time_zone

SERVERS = ("ollama@127.0.0.1:11434", "openai@127.0.0.1:1234")
MODELS = ("llama3.2:3b", "qwen2.5:7b", "Ωmega 🚀")


def local(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def record_sessions(store: Store, clock: FakeClock, spans: list[tuple[str, str]], seed: int) -> None:
    """One session per span; requests every ~7 minutes on each server, never overlapping on one
    server, including ones a second either side of local midnight."""
    rng = random.Random(seed)
    for start, end in spans:
        clock.t = local(start)
        store.begin_session(f"from {start}")
        t0, t1 = local(start), local(end)
        times = [t0 + 30.0 * i for i in range(int((t1 - t0) / 30.0))]
        midnights = [datetime.fromordinal(d).timestamp() for d in
                     range(date.fromtimestamp(t0).toordinal() + 1, date.fromtimestamp(t1).toordinal() + 1)]
        times += [m + dt for m in midnights for dt in (-1.5, 0.2)]
        records = []
        for i, ts in enumerate(sorted(t for t in times if t0 < t < t1 - 20)):
            if i % 14 and ts not in times[-2 * len(midnights):]:
                continue
            error = rng.random() < 0.1
            records.append(RequestRecord(
                ts_start=ts, server=SERVERS[i % 2], endpoint="/api/chat", model=rng.choice(MODELS),
                status=500 if error else 200, error_type="http" if error else "",
                latency_s=rng.uniform(0.1, 0.9), prompt_tokens=rng.randint(1, 900),
                completion_tokens=None if error else rng.randint(1, 600), source="proxy"))
        store.put(records)
        store.flush()
        clock.t = local(end)
    store.end_session()


def independent_sums(path: Path) -> dict[tuple[date, str, str], list[float]]:
    sums: dict[tuple[date, str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for ts, server, model, status, error_type, prompt, completion, latency in query(
            path, "SELECT ts_start, server, model, status, error_type, prompt_tokens, completion_tokens, "
                  "latency_s FROM requests"):
        cell = sums[(datetime.fromtimestamp(ts).date(), server, model)]
        cell[0] += 1
        cell[1] += int(bool(error_type) or not 200 <= status < 400)
        cell[2] += prompt or 0
        cell[3] += completion or 0
        cell[4] += latency
    return sums


def report_by_day(store: Store, t0: float, t1: float) -> dict[tuple[date, str, str], list[Any]]:
    conn = store.reader()
    try:
        report = usage_report(conn, t0, t1, "day")
    finally:
        conn.close()
    out = {}
    for c in report.cells:
        start = datetime.fromtimestamp(c.start)
        assert start.time() == datetime.min.time(), f"a day starts at local midnight, not {start}"
        assert c.sources["completion_tokens"] == {REQUESTS}
        out[(start.date(), c.server, c.model)] = [c.requests, c.errors, c.prompt_tokens, c.completion_tokens,
                                                  pytest.approx(c.busy_s)]
    return out


@pytest.mark.parametrize("zone, spans", [
    # UTC+05:45: local days start at a quarter past a UTC hour
    ("Asia/Kathmandu", [("2024-05-01T21:10", "2024-05-02T02:40"), ("2024-05-02T09:00", "2024-05-02T12:00"),
                        ("2024-05-03T23:20", "2024-05-04T00:50")]),
    # clocks go back at 02:00 on 2024-11-03: a 25-hour local day inside the second session
    ("America/New_York", [("2024-11-02T22:00", "2024-11-03T01:30"), ("2024-11-03T01:45", "2024-11-03T03:30"),
                          ("2024-11-04T23:00", "2024-11-05T00:40")]),
])
def test_usage_over_sessions_equals_sums_of_the_rows_per_local_day(tmp_path: Path, zone: str,
                                                                   spans: list[tuple[str, str]]) -> None:
    with local_time_zone(zone):
        clock = FakeClock(local(spans[0][0]))
        store = Store(tmp_path / "usage.db", clock=clock)
        store.start(new_session=False)
        record_sessions(store, clock, spans, seed=len(zone))
        expected = independent_sums(store.path)
        assert len({d for d, _, _ in expected}) >= 3  # the data really spans several local days
        t0, t1 = local(spans[0][0]), local(spans[-1][1])

        assert report_by_day(store, t0, t1) == expected  # computed from the raw rows

        clock.t = t1 + 3600.0
        UsageRollup(store, clock=clock).catch_up()
        assert rolled_until(store.reader()) is not None and rolled_until(store.reader()) >= t1
        assert report_by_day(store, t0, t1) == expected  # read back from the rollup
        store.close()


def test_rows_written_after_their_bucket_was_rolled_up_are_counted(tmp_path: Path) -> None:
    clock = FakeClock(local("2024-05-01T10:00"))
    store = Store(tmp_path / "late.db", clock=clock)
    store.start()
    store.put([RequestRecord(ts_start=clock.t + 60, server=SERVERS[0], endpoint="/api/chat", model="m",
                             status=200, latency_s=1.0, completion_tokens=10)])
    clock.t += 7200
    rollup = UsageRollup(store, clock=clock)
    rollup.catch_up()
    # A long answer that started in an already rolled-up bucket is written when it ends.
    store.put([RequestRecord(ts_start=local("2024-05-01T10:05"), server=SERVERS[0], endpoint="/api/chat",
                             model="m", status=200, latency_s=5400.0, completion_tokens=32)])
    clock.t += 600
    rollup.catch_up()
    report = usage_report(store.reader(), local("2024-05-01T00:00"), clock.t, "day")
    assert (report.total.requests, report.total.completion_tokens) == (2, 42)
    store.close()


def test_deleting_a_session_deletes_its_usage(tmp_path: Path) -> None:
    clock = FakeClock(local("2024-05-01T10:00"))
    store = Store(tmp_path / "delete.db", clock=clock)
    store.start()
    for session in range(2):
        store.put([RequestRecord(ts_start=clock.t + 10, server=SERVERS[0], endpoint="/api/chat", model="m",
                                 status=200, latency_s=1.0, completion_tokens=100 + session)])
        clock.t += 3600
        store.begin_session()
    rollup = UsageRollup(store, clock=clock)
    rollup.catch_up()
    assert usage_report(store.reader(), 0, clock.t).total.completion_tokens == 201
    delete_session(store, 1).result()
    rollup.catch_up()
    assert usage_report(store.reader(), 0, clock.t).total.completion_tokens == 101
    assert query(store.path, "SELECT count(*) FROM usage_rollup WHERE session_id=1") == [(0,)]
    store.close()


# --------------------------------------------------------------------------- two sources
def test_a_request_seen_by_the_proxy_and_by_llamacpp_counters_counts_once(
        tmp_path: Path, site: tuple[Path, str]) -> None:
    """The recorded llama-server served two chat requests between two scrapes (its counters went
    from 0 to 57 prompt and 80 completion tokens); one of them came through the proxy (the
    recorded answer: 29 prompt, 32 completion tokens), the other went straight to the server."""
    root, url = site
    clock = FakeClock(local("2024-05-01T10:00"))
    ticks = itertools.count(start=0.0, step=4.0)
    store = Store(tmp_path / "both.db", clock=clock)
    store.start()
    collector = LlamaCppCollector(url, "llamacpp@rec", clock=clock, monotonic=lambda: next(ticks))
    store.put(collector.poll())
    answer = json.loads((STREAMS / "llamaserver_chat.json").read_text())
    store.put([RequestRecord(ts_start=clock.t + 1, server="llamacpp@rec", endpoint="/v1/chat/completions",
                             model="gpt-4o-mini",  # what the client asked for; llama-server ignores it
                             status=200, latency_s=0.6, prompt_tokens=answer["usage"]["prompt_tokens"],
                             completion_tokens=answer["usage"]["completion_tokens"])])
    (root / "metrics_after").replace(root / "metrics")
    clock.t += 4
    store.put(collector.poll())
    collector.close()
    store.flush()

    (row,) = usage_report(store.reader(), clock.t - 3600, clock.t + 60, "day").rows
    assert (row.server, row.model) == ("llamacpp@rec", "gemma-3-270m")  # the model the server reported
    assert row.completion_tokens == 80 and row.measured["completion_tokens"] == 32  # not 80 + 32
    assert row.prompt_tokens == 57 and row.measured["prompt_tokens"] == 29
    assert row.sources["completion_tokens"] == {SERVER}
    assert row.requests == 1 and row.sources["requests"] == {REQUESTS}  # llama.cpp counts no requests
    store.close()


def test_vllm_traffic_that_bypassed_the_proxy_counts_from_its_counters(tmp_path: Path) -> None:
    clock = FakeClock(local("2024-05-01T10:00"))
    ticks = itertools.count(start=100.0, step=10.0)
    store = Store(tmp_path / "vllm.db", clock=clock)
    store.start()
    with SimVllm() as vllm:
        collector = VllmCollector(vllm.url, "vllm@sim", clock=clock, monotonic=lambda: next(ticks))
        store.put(collector.poll())
        vllm.advance()  # the recorded page after 24 requests nobody sent through llmmon
        clock.t += 10
        store.put(collector.poll())
        collector.close()
    store.flush()
    (row,) = usage_report(store.reader(), clock.t - 3600, clock.t + 60).rows
    assert (row.server, row.model) == ("vllm@sim", "tiny-llama")
    # the increases between the two recorded pages: 0 → 709 prompt, 0 → 2375 generation, 9 + 15 requests
    assert (row.prompt_tokens, row.completion_tokens, row.requests) == (709, 2375, 24)
    assert row.measured["completion_tokens"] == 0 and row.sources["requests"] == {SERVER}
    store.close()


def test_llamacpp_counters_over_restarts_and_sessions(tmp_path: Path) -> None:
    """A counter that goes down is a restart (the new value is the increase); nothing is counted
    between two sessions (llmmon was not watching)."""
    clock = FakeClock(local("2024-05-01T10:00"))
    store = Store(tmp_path / "restart.db", clock=clock)
    store.start()
    server = labels_of(server="llamacpp@x")
    model = labels_of(server="llamacpp@x", model="tiny")

    def readings(values: list[float]) -> None:
        for value in values:
            store.put([Sample("llamacpp_generation_tokens_total", value, clock.t, server),
                       Sample("llm_model_loaded", 1.0, clock.t, model)])
            clock.t += 1
        store.flush()
    readings([100, 150, 20, 50])     # +50, restart: +20, +30
    store.begin_session()
    readings([5000, 5010])           # the first reading of a session is only a base: +10
    (row,) = usage_report(store.reader(), clock.t - 3600, clock.t + 60).rows
    assert row.completion_tokens == 50 + 20 + 30 + 10
    store.close()
