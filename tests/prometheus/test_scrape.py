"""A real Prometheus scrapes two llmmon agents: each machine under its own name, and what
PromQL returns is what each machine's SQLite holds."""
from __future__ import annotations

import bisect
import json
import statistics
import time
from pathlib import Path

import httpx
import pytest

from app.exporter import TTFT_BUCKETS
from tests.prometheus.conftest import Fleet
from tests.prometheus.prometheus import JOB, PrometheusServer
from tests.support import query, wait_until

# Series Prometheus makes itself (for each target, and its alerts), and the exporter's request figures (checked
# against the requests table instead: they are not samples in SQLite).
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped",
                  "scrape_series_added", "scrape_samples_post_metric_relabeling"}
REQUEST_FAMILIES = ("llm_request_ttft_seconds", "llm_request_duration_seconds", "llm_request_inter_token_seconds",
                    "llm_requests_total", "llm_prompt_tokens_total", "llm_completion_tokens_total",
                    "llmmon_exporter_series_dropped_total")


def names(prometheus: PrometheusServer, instance: str) -> set[str]:
    return {r["metric"]["__name__"] for r in prometheus.query(f'{{job="{JOB}", instance="{instance}"}}')}


def chat(url: str, n: int) -> None:
    """``n`` streamed chat requests through a metering proxy (the official wire format)."""
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            with client.stream("POST", f"{url}/v1/chat/completions", json={
                    "model": "tiny", "stream": True, "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"Count to {i + 3}"}]}) as reply:
                assert reply.status_code == 200
                for _ in reply.iter_bytes():
                    pass


def test_each_machine_is_scraped_under_its_own_name(fleet: Fleet, prometheus: PrometheusServer) -> None:
    up = {r["metric"]["instance"]: float(r["value"][1]) for r in prometheus.query(f'up{{job="{JOB}"}}')}
    assert up["gpu-box-a"] == 1.0 and up["gpu-box-b"] == 1.0
    wait_until(lambda: {"ollama_model_vram_bytes", "vllm_requests_waiting"} <= names(prometheus, "gpu-box-a"),
               timeout=20, what="gpu-box-a's server series in Prometheus")
    wait_until(lambda: {"llamacpp_slots_total", "llm_model_loaded"} <= names(prometheus, "gpu-box-b"),
               timeout=20, what="gpu-box-b's server series in Prometheus")
    a, b = names(prometheus, "gpu-box-a"), names(prometheus, "gpu-box-b")
    assert {"system_cpu_percent", "system_memory_used_bytes", "llmmon_source_up"} <= a & b
    assert not any(n.startswith("llamacpp_") for n in a) and not any(n.startswith(("ollama_", "vllm_")) for n in b)
    servers = {(r["metric"]["instance"], r["metric"]["source"]) for r in prometheus.query(
        'llmmon_source_up{instance=~"gpu-box-a|gpu-box-b", kind=~"ollama|vllm|llamacpp"} == 1')}
    assert servers == {("gpu-box-a", fleet.server("ollama")), ("gpu-box-a", fleet.server("vllm")),
                       ("gpu-box-b", fleet.server("llamacpp"))}


def stored_values(db: Path, name: str, labels: dict[str, str]) -> set[float]:
    """The values SQLite holds for the series Prometheus names ``name{labels}``: Prometheus drops
    a label whose value is empty (a request that named no model), so those are left out here too."""
    series = [sid for sid, text in query(db, "SELECT id, labels FROM series WHERE name = ?", (name,))
              if {k: v for k, v in json.loads(text).items() if v} == labels]
    return {r[0] for sid in series for r in query(db, "SELECT value FROM samples WHERE series_id = ?", (sid,))}


def mismatches(prometheus: PrometheusServer, instance: str, db) -> list[str]:
    """Every series Prometheus holds for ``instance`` whose value is not one of the values that
    machine's SQLite recorded for the same series. Asked as of 3 s ago: the store commits every
    second, so what was scraped then is in the file now."""
    wrong = []
    for r in prometheus.query(f'{{job="{JOB}", instance="{instance}"}}', at=time.time() - 3):
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        if name in PROMETHEUS_OWN or name.startswith(REQUEST_FAMILIES):
            continue
        del labels["instance"], labels["job"]
        value = float(r["value"][1])
        if value not in stored_values(db, name, labels):
            wrong.append(f"{name}{labels} = {value!r}")
    return wrong


def test_promql_values_are_the_values_each_machine_recorded(fleet: Fleet, prometheus: PrometheusServer) -> None:
    for agent in (fleet.a, fleet.b):
        wrong: list[str] = []

        def same(agent=agent, wrong=wrong) -> bool:
            wrong[:] = mismatches(prometheus, agent.name, agent.db)
            return not wrong
        # the store writes in batches: a value just scraped may be a moment from the file
        try:
            wait_until(same, timeout=15, what=f"{agent.name}'s Prometheus values in its SQLite")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not there: {wrong[:8]}") from None
    size = prometheus.value('ollama_model_size_bytes{instance="gpu-box-a", model="gemma4"}')
    assert size == 6591830464  # the recorded /api/ps answer, through collector, exporter and scrape
    labels = {"model": "gemma4", "server": fleet.server("ollama")}
    assert size in stored_values(fleet.a.db, "ollama_model_size_bytes", labels)
    assert prometheus.value('vllm_requests_waiting{instance="gpu-box-a"}') == 1.0
    slots = prometheus.value('llamacpp_slots_total{instance="gpu-box-b"}')
    assert slots == fleet.llama.slots


def test_request_histograms_and_counters_match_the_requests_table(fleet: Fleet,
                                                                   prometheus: PrometheusServer) -> None:
    db = fleet.b.db
    session = query(db, "SELECT max(id) FROM sessions")[0][0]

    def stored(sql: str, where: str = "1") -> float:
        return query(db, f"SELECT {sql} FROM requests WHERE session_id = ? AND {where}", (session,))[0][0] or 0

    ok = "status BETWEEN 200 AND 399 AND error_type = ''"  # the histograms observe these (RequestRecord.ok)

    before = stored("count(*)")  # other tests of the session sent some already
    chat(fleet.proxy_url, 3)
    wait_until(lambda: stored("count(*)") >= before + 3, timeout=20, what="3 more requests in gpu-box-b's database")
    where = 'instance="gpu-box-b"'
    wait_until(lambda: prometheus.value(f"sum(llm_requests_total{{{where}}})") == stored("count(*)"),
               timeout=20, what="the requests counted in Prometheus")
    assert prometheus.value(f'sum(llm_requests_total{{{where}, status="200", error_type=""}})') == \
        stored("sum(status = 200 AND error_type = '')")
    assert prometheus.value(f"sum(llm_request_ttft_seconds_count{{{where}}})") == stored("count(ttft_s)", ok)
    assert prometheus.value(f"sum(llm_request_ttft_seconds_sum{{{where}}})") == \
        pytest.approx(stored("sum(ttft_s)", ok))
    assert prometheus.value(f"sum(llm_request_duration_seconds_count{{{where}}})") == stored("count(latency_s)", ok)
    tokens = stored("sum(completion_tokens) FILTER (WHERE NOT tokens_estimated)")
    assert tokens > 0
    assert prometheus.value(f"sum(llm_completion_tokens_total{{{where}}})") == tokens
    models = {r["metric"]["model"] for r in prometheus.query(f"llm_request_ttft_seconds_count{{{where}}}")}
    assert models == {"tiny"}
    # Prometheus' median lies in the bucket that holds the median of the measured TTFTs
    median = statistics.median(r[0] for r in query(db, "SELECT ttft_s FROM requests WHERE session_id = ? "
                                                   f"AND ttft_s IS NOT NULL AND {ok}", (session,)))
    i = bisect.bisect_left(TTFT_BUCKETS, median)
    low, high = (TTFT_BUCKETS[i - 1] if i else 0.0), TTFT_BUCKETS[i]
    p50 = prometheus.value(f"histogram_quantile(0.5, sum by (le) (llm_request_ttft_seconds_bucket{{{where}}}))")
    assert low <= p50 <= high
