"""Per-model trends: daily medians and p90 against numpy over the same rows, and the markers
where the model's digest (the simulated Ollama replays the recorded /api/tags with another
digest), the server's version or the GPU driver changed — across collector restarts."""
from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from app.hub import Hub
from app.records import Event, RequestRecord, labels_of
from app.storage.store import Store
from app.usage.changes import VersionRecorder, change_markers
from app.usage.rollup import UsageRollup
from app.usage.trends import LOAD_MIN_S, model_trend
from collectors.gpu import GpuCollector
from collectors.ollama import OllamaCollector
from tests.collectors.test_gpu import FakeNvml, rtx
from tests.sim.ollama import SimOllama
from tests.support import query
from tests.support.clock import FakeClock
from tests.support.timezones import local_time_zone

NEW_DIGEST = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"


class DriverNvml(FakeNvml):
    def __init__(self, gpus: list[dict], driver: str) -> None:
        super().__init__(gpus)
        self.driver = driver

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver


def test_digest_version_and_driver_changes_are_marked_where_the_payloads_change(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2024, 5, 1, 9, 0).timestamp())
    store = Store(tmp_path / "changes.db", clock=clock)
    store.start()
    hub = Hub(store, clock=clock)
    hub.subscribe(VersionRecorder(hub.publish))
    recorded_digest = SimOllama().tags["models"][1]["digest"]  # llama3:latest in the recorded /api/tags

    def run_llmmon(sim: SimOllama, driver: str, polls: int = 2) -> None:
        """One llmmon run (a session): new collectors, as after a restart."""
        store.begin_session()
        ollama = OllamaCollector(sim.url, "ollama@sim", tags_interval=0, clock=clock)
        gpu = GpuCollector(nvml=DriverNvml([rtx()], driver), clock=clock, monotonic=itertools.count().__next__)
        for _ in range(polls):
            hub.publish(ollama.poll())
            hub.publish(gpu.poll())
            clock.t += 60
        ollama.close()

    with SimOllama() as sim:
        run_llmmon(sim, "550.54.15")
        clock.t += 86400
        run_llmmon(sim, "550.54.15")            # a restart, nothing changed: no marker
        digest_at = clock.t
        sim.tags["models"][1]["digest"] = NEW_DIGEST  # `ollama pull llama3` fetched a new version
        run_llmmon(sim, "550.54.15")
        version_at = clock.t
        sim.version = {"version": "0.13.0"}
        run_llmmon(sim, "560.35.03")
    store.flush()
    conn = store.reader()
    markers = change_markers(conn, 0, clock.t)
    assert sorted((m.ts, m.kind) for m in markers) == [
        (digest_at, "model digest"), (version_at, "GPU driver"), (version_at, "server version")]
    texts = {m.kind: m.text for m in markers}
    assert texts["model digest"] == f"llama3:latest on ollama@sim: digest {recorded_digest[:12]} → {NEW_DIGEST[:12]}"
    assert texts["server version"] == "ollama@sim: version 0.12.6 → 0.13.0"
    assert texts["GPU driver"] == "GPU driver 550.54.15 → 560.35.03"
    # Only llama3's digest changed: codellama's trend has the version and driver markers only.
    assert {m.kind for m in change_markers(conn, 0, clock.t, "codellama:13b", ["ollama@sim"])} == {
        "server version", "GPU driver"}
    # Each run recorded what it saw once (first poll), not once per poll.
    assert query(store.path, "SELECT count(*) FROM events WHERE kind='model_digest'") == [(8,)]
    store.close()


def test_daily_medians_and_p90_equal_numpy_over_the_days_rows(tmp_path: Path) -> None:
    with local_time_zone("America/Los_Angeles"):
        start = datetime(2024, 3, 9, 6, 0).timestamp()  # clocks go forward on 2024-03-10
        clock = FakeClock(start)
        store = Store(tmp_path / "trend.db", clock=clock)
        store.start()
        rng = random.Random(7)
        records, loads = [], []
        for i in range(400):
            ts = start + i * 600.0 + rng.uniform(0, 300)
            error = i % 25 == 0
            records.append(RequestRecord(
                ts_start=ts, server="ollama@x", endpoint="/api/chat", model="llama3" if i % 4 else "other",
                status=500 if error else 200, error_type="http" if error else "", latency_s=2.0,
                ttft_s=rng.uniform(0.05, 0.8), server_tokens_per_s=rng.uniform(40, 120) if i % 7 else None,
                client_tokens_per_s=rng.uniform(30, 100), load_s=rng.choice([0.01, 0.02, rng.uniform(1, 4)])))
            if i % 30 == 0:
                loads.append(Event("model_loaded", "ollama@x", "llama3 loaded", ts,
                                   labels_of(server="ollama@x", model="llama3")))
        store.put(records)
        store.put(loads)
        store.flush()
        end = records[-1].ts_start + 1
        check_days(model_trend(store.reader(), "llama3", start, end), records, loads)  # from the requests

        clock.t = end + 86400  # the rollup keeps the complete days
        rollup = UsageRollup(store, clock=clock)
        rollup.catch_up()
        kept = query(store.path, "SELECT count(*) FROM usage_trend_day WHERE model='llama3'")[0][0]
        assert kept >= 3
        check_days(model_trend(store.reader(), "llama3", start, end), records, loads)  # from the kept days
        # a request that ended long after it began, written after its day was kept
        late = RequestRecord(ts_start=start + 3600, server="ollama@x", endpoint="/api/chat", model="llama3",
                             status=200, latency_s=4000.0, ttft_s=9.0, server_tokens_per_s=1.0)
        store.put([late])
        rollup.catch_up()
        check_days(model_trend(store.reader(), "llama3", start, end), [*records, late], loads)
        store.close()


def check_days(trend, records: list[RequestRecord], loads: list[Event]) -> None:
    by_day: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        if r.model == "llama3" and not r.error_type:
            by_day[datetime.fromtimestamp(r.ts_start).date().isoformat()].append(r)
    days = {datetime.fromtimestamp(d.start).date().isoformat(): d for d in trend.days}
    assert set(by_day) <= set(days) and len(by_day) >= 3
    for day, rows in by_day.items():
        d = days[day]
        speeds = [r.server_tokens_per_s if r.server_tokens_per_s is not None else r.client_tokens_per_s
                  for r in rows]
        assert d.requests == len(rows)
        assert (d.speed_median, d.speed_p90) == pytest.approx(tuple(np.percentile(speeds, [50, 90])))
        assert (d.ttft_median, d.ttft_p90) == pytest.approx(tuple(np.percentile([r.ttft_s for r in rows],
                                                                               [50, 90])))
        slow_loads = [r.load_s for r in rows if r.load_s and r.load_s > LOAD_MIN_S]
        assert d.load_median_s == (pytest.approx(float(np.median(slow_loads))) if slow_loads else None)
        assert d.loads == sum(1 for e in loads if datetime.fromtimestamp(e.ts).date().isoformat() == day)
