"""The Prometheus exporter: what a scrape gets (names of docs/metrics.md, types, the latest value
of each current series), the request histograms and counters, the caps on labels and series,
listening (127.0.0.1, a clear error when the port is taken) and ``--serve-metrics`` in the
headless and proxy modes. Scrapes are parsed with prometheus_client's own parser."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from app.buffers import LiveBuffers
from app.config import ExporterSettings, Settings
from app.exporter import MAX_AGE_S, MetricsExporter
from app.records import RequestRecord, Sample, labels_of
from app.runtime import Runtime
from tests.real_server.llama_server import free_port
from tests.sim.upstream import SimUpstream
from tests.support import wait_until
from tests.support.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0


def scrape(exporter: MetricsExporter) -> dict[tuple[str, tuple], float]:
    """``(sample name, labels) → value`` of one scrape, read by prometheus_client's parser."""
    text = exporter.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def types(exporter: MetricsExporter) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(exporter.exposition().decode())}


def make(max_series: int = 1000) -> tuple[LiveBuffers, MetricsExporter, FakeClock]:
    buffers, clock = LiveBuffers(), FakeClock(NOW)
    return buffers, MetricsExporter(buffers, ExporterSettings(True, max_series_per_metric=max_series), clock), clock


def test_latest_value_of_each_series_with_its_names_and_type() -> None:
    buffers, exporter, _ = make()
    gpu = labels_of(gpu="0")
    buffers.add([Sample("gpu_temperature_celsius", 60.0, NOW - 2, gpu),
                 Sample("gpu_temperature_celsius", 71.5, NOW - 1, gpu),
                 Sample("llamacpp_prompt_tokens_total", 1234.0, NOW - 1, labels_of(server="llamacpp@box:8080")),
                 Sample("system_cpu_percent", 12.5, NOW - 1)])
    got = scrape(exporter)
    assert got[("gpu_temperature_celsius", (("gpu", "0"),))] == 71.5
    assert got[("llamacpp_prompt_tokens_total", (("server", "llamacpp@box:8080"),))] == 1234.0
    assert got[("system_cpu_percent", ())] == 12.5
    assert types(exporter)["llamacpp_prompt_tokens"] == "counter"  # the family of a *_total
    assert types(exporter)["gpu_temperature_celsius"] == "gauge"


def test_only_series_of_each_sources_latest_read_and_not_stale_ones() -> None:
    buffers, exporter, clock = make()
    ollama = "ollama@box:11434"
    buffers.add([Sample("llm_model_loaded", 1.0, NOW - 10, labels_of(server=ollama, model="llama3")),
                 Sample("llm_model_loaded", 1.0, NOW - 10, labels_of(server=ollama, model="gemma4")),
                 Sample("llm_model_loaded", 1.0, NOW - 5, labels_of(server=ollama, model="gemma4")),  # llama3 unloaded
                 Sample("llm_model_loaded", 1.0, NOW - 30, labels_of(server="vllm@box:8000", model="qwen")),
                 # a server polled with backoff (down) reads less often than the others
                 Sample("llmmon_source_up", 0.0, NOW - 9, labels_of(source="vllm@box:8000", kind="vllm")),
                 Sample("llmmon_source_up", 1.0, NOW - 1, labels_of(source="system", kind="system"))])
    got = scrape(exporter)
    loaded = {dict(k[1])["model"] for k in got if k[0] == "llm_model_loaded"}
    assert loaded == {"gemma4", "qwen"}
    assert got[("llmmon_source_up", (("kind", "vllm"), ("source", "vllm@box:8000")))] == 0.0
    clock.t = NOW + MAX_AGE_S  # no collector read anything for two minutes: nothing current
    assert scrape(exporter) == {}


def record(**fields: object) -> RequestRecord:
    base: dict[str, object] = dict(ts_start=NOW, server="ollama@box:11434", endpoint="/api/chat", model="llama3",
                                   status=200, stream=True, ttft_s=0.3, latency_s=4.0, itl_mean_s=0.02,
                                   prompt_tokens=12, completion_tokens=100, prompt_text="PROMPT-XYZZY",
                                   response_text="RESPONSE-PLUGH")
    base.update(fields)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_requests_become_histograms_and_counters_without_their_text() -> None:
    _, exporter, _ = make()
    exporter.requests([record(), record(ttft_s=1.2, latency_s=9.0, completion_tokens=50),
                       record(status=502, error_type="upstream_down", error="ERROR-FROTZ", ttft_s=None, latency_s=0.01,
                              prompt_tokens=None, completion_tokens=None),
                       record(completion_tokens=7, tokens_estimated=True)])
    got = scrape(exporter)
    who = (("model", "llama3"), ("server", "ollama@box:11434"))
    assert got[("llm_requests_total", (("error_type", ""), *who, ("status", "200")))] == 3
    assert got[("llm_requests_total", (("error_type", "upstream_down"), *who, ("status", "502")))] == 1
    assert got[("llm_completion_tokens_total", who)] == 150  # estimates are not counted
    assert got[("llm_prompt_tokens_total", who)] == 24
    assert got[("llm_request_ttft_seconds_count", who)] == 3  # the failed request is not observed
    assert got[("llm_request_ttft_seconds_sum", who)] == pytest.approx(1.8)
    assert got[("llm_request_ttft_seconds_bucket", (("le", "0.5"), *who))] == 2
    assert got[("llm_request_ttft_seconds_bucket", (("le", "2.5"), *who))] == 3
    assert got[("llm_request_duration_seconds_count", who)] == 3
    assert got[("llm_request_inter_token_seconds_sum", who)] == pytest.approx(0.06)
    assert types(exporter)["llm_request_ttft_seconds"] == "histogram"
    page = exporter.exposition().decode()
    assert "XYZZY" not in page and "PLUGH" not in page and "FROTZ" not in page
    assert "_created" not in page  # no creation-time series for Prometheus to store


def test_labels_are_cut_and_series_capped_with_a_count_of_what_was_dropped() -> None:
    buffers, exporter, _ = make(max_series=3)
    buffers.add([Sample("llm_model_loaded", 1.0, NOW, labels_of(server="s", model=f"model-{i}")) for i in range(5)])
    buffers.add([Sample("gpu_utilization_percent", 50.0, NOW, labels_of(gpu="0", name="x" * 1000)),
                 Sample("bad-name", 1.0, NOW), Sample("gpu_power_watts", 1.0, NOW, labels_of({"gpu id": "0"}))])
    exporter.requests([record(model=f"m{i}") for i in range(5)] * 2)
    scrape(exporter)
    got = scrape(exporter)  # a label set left out is counted once, not at every scrape or request
    assert sum(1 for k in got if k[0] == "llm_model_loaded") == 3
    assert sum(1 for k in got if k[0] == "llm_requests_total") == 3
    long_name = next(dict(k[1])["name"] for k in got if k[0] == "gpu_utilization_percent")
    assert len(long_name) == 256 and long_name.endswith("…")
    dropped = {dict(k[1])["metric"]: v for k, v in got.items() if k[0] == "llmmon_exporter_series_dropped_total"}
    assert dropped["llm_model_loaded"] == 2 and dropped["bad-name"] == 1 and dropped["gpu_power_watts"] == 1
    assert dropped["llm_requests_total"] == 2 and dropped["llm_completion_tokens_total"] == 2


texts = st.text(max_size=300)
samples = st.builds(Sample, name=st.one_of(st.from_regex(r"[a-z_]{1,20}(_total)?", fullmatch=True), texts),
                    value=st.floats(allow_nan=True, allow_infinity=True), ts=st.just(NOW),
                    labels=st.dictionaries(st.one_of(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), texts), texts,
                                           max_size=3).map(labels_of))


@settings(max_examples=150, deadline=None)
@given(st.lists(samples, max_size=20), st.lists(st.builds(record, model=texts, server=texts, status=st.integers(),
                                                          error_type=texts), max_size=5))
def test_any_series_and_requests_give_a_page_prometheus_can_read(batch: list[Sample], requests) -> None:
    buffers, exporter, _ = make(max_series=5)
    buffers.add(batch)
    exporter.requests(requests)
    families = list(text_string_to_metric_families(exporter.exposition().decode()))  # raises if unreadable
    assert any(f.name == "llmmon_exporter_series_dropped" for f in families)


def test_listens_on_loopback_and_says_so_when_the_port_is_taken(db_file: Path) -> None:
    port = free_port()
    runtime = Runtime.create(db_file, Settings(discover_local=False), serve_metrics=("127.0.0.1", port))
    runtime.start()
    try:
        assert runtime.exporter is not None and runtime.exporter.status() == \
            f"metrics for Prometheus on http://127.0.0.1:{port}/metrics"
        wait_until(lambda: "system_cpu_percent " in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                   what="the system series on /metrics")
        second = Runtime.create(db_file.with_name("other.db"), Settings(discover_local=False),
                                serve_metrics=("127.0.0.1", port))
        second.start()
        try:
            assert second.problems == [f"metrics exporter cannot listen on 127.0.0.1:{port}: Address already in use"]
            wait_until(lambda: second.hub.buffers.latest(("system_cpu_percent", ())) is not None,
                       what="the second runtime recording anyway")
        finally:
            second.stop()
    finally:
        runtime.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")  # stopped with the runtime
    assert Runtime.create(db_file, Settings(discover_local=False)).exporter is None  # off by default


def test_proxy_mode_serves_the_request_counters(db_file: Path) -> None:
    metrics, listen = free_port(), free_port()
    with SimUpstream() as up:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--db", str(db_file), "--serve-metrics", str(metrics),
             "proxy", "--upstream", up.url, "--listen", str(listen), "--kind", "ollama"],
            cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": ""}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            lines = [proc.stdout.readline().strip() for _ in range(3)]
            assert lines[0].startswith(f"llmmon proxy: http://127.0.0.1:{listen} → {up.url}")
            assert "recording to" in lines[1]
            assert lines[2] == f"llmmon proxy: metrics for Prometheus on http://127.0.0.1:{metrics}/metrics"
            httpx.post(f"http://127.0.0.1:{listen}/api/chat", json={"model": "llama3", "messages": []}, timeout=30)
            wait_until(lambda: 'llm_requests_total{' in httpx.get(f"http://127.0.0.1:{metrics}/metrics").text,
                       what="the request counted on /metrics")
            page = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
            assert 'status="200"' in page and "llm_request_ttft_seconds_bucket" in page
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_bad_address_is_refused_before_anything_starts(db_file: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db_file),
                           "--serve-metrics", "localhost:http"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a port or HOST:PORT: 'localhost:http'" in done.stderr
    assert not db_file.exists()
