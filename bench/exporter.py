"""Exporter and fleet-view benchmark.

1. Scrape time and size of llmmon's ``/metrics`` for 1,000 series, and for a big GPU box
   (8 GPUs × 3 vLLM servers × 5 models, with the request histograms of those 15 models),
   against prometheus_client's bare exposition of the same numbers in the same run (a collector
   over a ready dict of values, bare Histogram/Counter objects fed the same requests): in process
   (``generate_latest``) and over HTTP (``start_http_server``, what Prometheus does).
2. The Fleet tab's time to first draw from a real Prometheus holding 10 machines × 24 h
   (backfilled with ``promtool tsdb create-blocks-from openmetrics``, one point per 30 s):
   until the machines table is filled, and from clicking a machine to its 24-hour charts drawn;
   against the bare HTTP time of the same questions (httpx, same run).

    .venv/bin/python bench/exporter.py [--skip-fleet] [--runs 200]
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import prometheus_client  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from app.buffers import LiveBuffers  # noqa: E402
from app.config import ExporterSettings  # noqa: E402
from app.exporter import DURATION_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, MetricsExporter  # noqa: E402
from app.records import Labels, RequestRecord, Sample, SeriesKey, labels_of  # noqa: E402

if TYPE_CHECKING:
    from widgets.fleet_panel import FleetPanel as FleetPanelType

NOW = time.time()
rng = random.Random(42)


# ---------------------------------------------------------------------------- series
def thousand_series() -> tuple[list[Sample], list[RequestRecord]]:
    """50 metrics × 20 label sets (4 servers × 5 models), gauges."""
    samples = [Sample(f"bench_metric_{m}_ratio", rng.random(), NOW,
                      labels_of(server=f"vllm@10.0.0.{s}:8000", model=f"org/model-{k}-7b-instruct"))
               for m in range(50) for s in range(4) for k in range(5)]
    return samples, []


def gpu_box() -> tuple[list[Sample], list[RequestRecord]]:
    """What one llmmon records on a machine with 8 GPUs running 3 vLLM servers of 5 models each."""
    out: list[Sample] = []

    def add(name: str, labels: Labels = (), value: float | None = None) -> None:
        out.append(Sample(name, rng.random() * 100 if value is None else value, NOW, labels))

    for name in ("system_cpu_percent", "system_memory_used_bytes", "system_memory_total_bytes",
                 "system_memory_percent", "system_swap_used_bytes", "system_swap_percent",
                 "system_disk_read_bytes_per_second", "system_disk_write_bytes_per_second",
                 "system_net_recv_bytes_per_second", "system_net_sent_bytes_per_second"):
        add(name)
    for core in range(64):
        add("system_cpu_core_percent", labels_of(core=core))
    for mount in ("/", "/data", "/models"):
        add("system_disk_used_bytes", labels_of(mount=mount))
        add("system_disk_percent", labels_of(mount=mount))
    add("llmmon_source_up", labels_of(source="system", kind="system"), 1)
    add("llmmon_source_up", labels_of(source="gpu", kind="gpu"), 1)
    servers = [f"vllm@127.0.0.1:{8000 + i}" for i in range(3)]
    for gpu in range(8):
        g = labels_of(gpu=gpu)
        add("gpu_info", labels_of(gpu=gpu, name="NVIDIA H100 80GB HBM3"), 1)
        for name in ("gpu_utilization_percent", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
                     "gpu_memory_percent", "gpu_temperature_celsius", "gpu_power_watts", "gpu_power_limit_watts",
                     "gpu_sm_clock_hertz", "gpu_memory_clock_hertz", "gpu_fan_percent", "gpu_throttled"):
            add(name, g)
        add("gpu_process_memory_bytes", labels_of(gpu=gpu, pid=4000 + gpu % 3, process="python3"))
    for server in servers:
        s = labels_of(server=server)
        add("llmmon_source_up", labels_of(source=server, kind="vllm"), 1)
        for name in ("llm_models_loaded", "llm_models_installed", "llm_poll_latency_seconds",
                     "llm_server_process_cpu_percent", "llm_server_process_rss_bytes", "llm_requests_active",
                     "llm_requests_per_second", "llm_errors_per_second", "llm_error_ratio"):
            add(name, s)
        for q in ("0.5", "0.9", "0.99"):
            add("llm_ttft_seconds", labels_of(server=server, quantile=q))
            add("llm_request_latency_seconds", labels_of(server=server, quantile=q))
        for k in range(5):
            model = f"org/model-{k}-70b-instruct"
            sm = labels_of(server=server, model=model)
            for name in ("llm_model_loaded", "vllm_requests_running", "vllm_requests_waiting",
                         "vllm_kv_cache_usage_ratio", "vllm_prompt_tokens_per_second",
                         "vllm_generation_tokens_per_second", "vllm_preemptions_per_second",
                         "vllm_prefix_cache_hit_ratio", "llm_tokens_per_second", "llm_request_tokens_per_second"):
                add(name, sm)
            for reason in ("stop", "length", "abort"):
                add("vllm_requests_finished_per_second", labels_of(server=server, model=model, finished_reason=reason))
            for name in ("vllm_ttft_seconds", "vllm_itl_seconds", "vllm_e2e_latency_seconds",
                         "vllm_queue_time_seconds"):
                for q in ("0.5", "0.9", "0.95", "0.99"):
                    add(name, labels_of(server=server, model=model, quantile=q))
    requests = [RequestRecord(NOW, server, "/v1/chat/completions", model=f"org/model-{k}-70b-instruct", status=200,
                              stream=True, ttft_s=rng.random(), latency_s=rng.random() * 20,
                              itl_mean_s=rng.random() / 20, prompt_tokens=rng.randrange(1000),
                              completion_tokens=rng.randrange(1000))
                for server in servers for k in range(5) for _ in range(20)]
    return out, requests


# ---------------------------------------------------------------------------- the baseline
class BareCollector(Collector):
    """prometheus_client's own way of exposing ready numbers: families built from a dict."""

    def __init__(self, values: dict[SeriesKey, float]) -> None:
        self.by_name: dict[str, list[tuple[Labels, float]]] = collections.defaultdict(list)
        for (name, labels), value in sorted(values.items()):
            self.by_name[name].append((labels, value))

    def collect(self) -> Iterable[Metric]:
        for name, series in self.by_name.items():
            family: Metric = CounterMetricFamily(name, "h") if name.endswith("_total") else GaugeMetricFamily(name, "h")
            for labels, value in series:
                family.add_sample(name, dict(labels), value)
            yield family


def bare_registry(samples: list[Sample], requests: list[RequestRecord]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BareCollector({s.key: s.value for s in samples}))
    who = ["server", "model"]
    ttft = Histogram("llm_request_ttft_seconds", "h", who, registry=registry, buckets=TTFT_BUCKETS)
    duration = Histogram("llm_request_duration_seconds", "h", who, registry=registry, buckets=DURATION_BUCKETS)
    itl = Histogram("llm_request_inter_token_seconds", "h", who, registry=registry, buckets=ITL_BUCKETS)
    total = Counter("llm_requests", "h", [*who, "status", "error_type"], registry=registry)
    prompt = Counter("llm_prompt_tokens", "h", who, registry=registry)
    completion = Counter("llm_completion_tokens", "h", who, registry=registry)
    for r in requests:
        total.labels(r.server, r.model, str(r.status), r.error_type).inc()
        prompt.labels(r.server, r.model).inc(r.prompt_tokens or 0)
        completion.labels(r.server, r.model).inc(r.completion_tokens or 0)
        ttft.labels(r.server, r.model).observe(r.ttft_s or 0)
        duration.labels(r.server, r.model).observe(r.latency_s or 0)
        itl.labels(r.server, r.model).observe(r.itl_mean_s or 0)
    return registry


def ours(samples: list[Sample], requests: list[RequestRecord]) -> MetricsExporter:
    buffers = LiveBuffers(capacity=64)
    for back in (3, 2, 1):  # a little history per series, as the live buffers hold
        buffers.add(Sample(s.name, s.value, s.ts - back, s.labels) for s in samples)
    buffers.add(samples)
    exporter = MetricsExporter(buffers, ExporterSettings(True, "127.0.0.1", 0), clock=lambda: NOW)
    exporter.requests(requests)
    return exporter


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def scrape_case(name: str, make: Callable[[], tuple[list[Sample], list[RequestRecord]]], runs: int) -> None:
    samples, requests = make()
    exporter = ours(samples, requests)
    bare = bare_registry(samples, requests)
    page = exporter.exposition()
    bare_page = prometheus_client.generate_latest(bare)
    lines = sum(1 for line in page.splitlines() if not line.startswith(b"#"))
    ours_ms = median_ms(exporter.exposition, runs)
    bare_ms = median_ms(lambda: prometheus_client.generate_latest(bare), runs)
    exporter.start()
    server, _thread = prometheus_client.start_http_server(0, "127.0.0.1", bare)
    with httpx.Client() as client:
        url, bare_url = f"http://127.0.0.1:{exporter.port}/metrics", f"http://127.0.0.1:{server.server_port}/metrics"
        http_ms = median_ms(lambda: client.get(url), runs)
        bare_http_ms = median_ms(lambda: client.get(bare_url), runs)
    exporter.stop()
    server.shutdown()
    server.server_close()
    print(f"\n{name}: {len(samples)} live series + {len(requests)} requests → {lines} sample lines")
    print(f"  page: {len(page):,} B ({len(gzip.compress(page)):,} B gzipped); bare: {len(bare_page):,} B")
    print(f"  generate_latest: ours {ours_ms:.2f} ms, bare {bare_ms:.2f} ms ({ours_ms / bare_ms:.2f}×)")
    print(f"  HTTP GET /metrics: ours {http_ms:.2f} ms, bare {bare_http_ms:.2f} ms ({http_ms / bare_http_ms:.2f}×)")


# ---------------------------------------------------------------------------- fleet
MACHINES = 10
STEP_S = 30
DAY = 86400


def wave(base: float, period: int = 1, steps: int = 1, scale: float = 1.0) -> Callable[[int], float]:
    """A value at time ``t`` that steps through ``steps`` levels, one every ``period`` seconds."""
    return lambda t: base + scale * ((t // period) % steps)


def openmetrics(path: Path, end: float) -> int:
    """10 machines × 24 h of the series the Fleet tab reads, one point per 30 s."""
    start = int(end - DAY)
    times = range(start, int(end), STEP_S)
    families: dict[str, list[tuple[dict[str, str], Callable[[int], float]]]] = collections.defaultdict(list)
    for m in range(MACHINES):
        base = {"instance": f"gpu-box-{m:02d}", "job": "llmmon"}
        server = f"vllm@gpu-box-{m:02d}:8000"
        families["up"].append((base, wave(1.0)))
        for source, kind in (("system", "system"), ("gpu", "gpu"), (server, "vllm")):
            families["llmmon_source_up"].append(({**base, "source": source, "kind": kind}, wave(1.0)))
        families["system_cpu_percent"].append((base, wave(20.0 + m, 600, 5, 10.0)))
        families["system_memory_percent"].append((base, wave(40.0)))
        for k in range(2):
            sm = {**base, "server": server, "model": f"org/model-{k}"}
            families["llm_model_loaded"].append((sm, wave(1.0)))
            families["llm_tokens_per_second"].append((sm, wave(30.0 + k, 300, 7)))
            families["vllm_generation_tokens_per_second"].append((sm, wave(60.0 + k, 120, 9)))
            families["vllm_requests_running"].append((sm, wave(0.0, 60, 4)))
            families["vllm_requests_waiting"].append((sm, wave(0.0, 90, 3)))
            families["vllm_kv_cache_usage_ratio"].append((sm, wave(0.0, 60, 10, 0.1)))
        for q in (0.5, 0.9):
            families["llm_ttft_seconds"].append(({**base, "server": server, "quantile": str(q)}, wave(q, 900, 3, 0.1)))
        for gpu in range(2):
            g = {**base, "gpu": str(gpu)}
            families["gpu_info"].append(({**g, "name": "NVIDIA L40S"}, wave(1.0)))
            families["gpu_utilization_percent"].append((g, wave(50.0, 60, 40)))
            families["gpu_memory_used_bytes"].append((g, wave(30e9)))
            families["gpu_memory_total_bytes"].append((g, wave(48e9)))
    n = 0
    with path.open("w") as f:
        for name, series in families.items():
            f.write(f"# TYPE {name} gauge\n")
            for labels, value in series:
                text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                f.writelines(f"{name}{{{text}}} {value(t)} {t}\n" for t in times)
                n += len(times)
        f.write("# EOF\n")
    return n


def until(app: object, done: Callable[[], object], timeout: float = 60.0) -> None:
    """Run the Qt event loop (timers, paints) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the Fleet tab did not draw")
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(0.001)  # an idle event loop, not a spinning one


def first_draw(app: object, panel: FleetPanelType) -> tuple[float, float, float]:
    """Seconds until the machines table is filled, from a click on a machine to its charts, and
    from a click on another machine to its charts.
    As in the app: the window refreshes the tab once when it is shown (then every second); the
    tab looks again by itself until the poller's answers are there."""
    t = time.perf_counter()
    panel.refresh(time.time())
    until(app, lambda: panel.machines.rowCount() >= MACHINES)
    table = time.perf_counter() - t
    t = time.perf_counter()
    panel.select_machine("gpu-box-03")  # a click on its row: the charts are built, then drawn
    until(app, lambda: panel.charts and all(not p.showing_empty_text for p in panel.charts))
    app.processEvents()  # type: ignore[attr-defined]  # the paint of the new curves
    first = time.perf_counter() - t
    t = time.perf_counter()
    panel.select_machine("gpu-box-07")  # another machine: the same charts, redrawn
    until(app, lambda: panel.machine_label.text().startswith("gpu-box-07: ")
          and "series from Prometheus" in panel.machine_label.text())
    app.processEvents()  # type: ignore[attr-defined]
    return table, first, time.perf_counter() - t


def fleet_case(runs: int) -> None:
    from PySide6.QtWidgets import QApplication

    from app.config import PrometheusSource, Settings
    from app.fleet.model import HISTORY_METRICS, QUERIES, history_step
    from app.runtime import Runtime
    from tests.prometheus.prometheus import PrometheusServer
    from widgets.fleet_panel import FleetPanel
    from widgets.time_window import TimeWindow

    work = Path(tempfile.mkdtemp(prefix="llmmon-bench-fleet-"))
    try:
        end = time.time()
        t = time.perf_counter()
        points = openmetrics(work / "fleet.om", end)
        written = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(work / "fleet.om"),
                        str(work / "prometheus" / "data")], check=True, capture_output=True)
        backfilled = time.perf_counter() - t
        print(f"\nfleet: {MACHINES} machines × 24 h, {points:,} points "
              f"(written in {written:.1f} s, promtool backfill {backfilled:.1f} s)")
        prometheus = PrometheusServer(work / "prometheus").start()
        app = QApplication.instance() or QApplication([])
        table_s: list[float] = []
        charts_s: list[float] = []
        other_s: list[float] = []
        for i in range(runs):
            runtime = Runtime.create(work / f"bench{i}.db", Settings(discover_local=False,
                                                                      prometheus=[PrometheusSource(prometheus.url)]))
            panel = FleetPanel(runtime)
            panel.view = TimeWindow(span_s=DAY)
            panel.resize(1600, 1000)
            panel.show()
            table, charts, other = first_draw(app, panel)
            table_s.append(table)
            charts_s.append(charts)
            other_s.append(other)
            panel.shutdown()
            panel.deleteLater()
            runtime.stop()
        with httpx.Client(base_url=prometheus.url, timeout=30) as client:
            def bare_fleet() -> None:
                for q in QUERIES.values():
                    client.post("/api/v1/query", data={"query": q}).raise_for_status()
                client.get("/api/v1/alerts").raise_for_status()

            now = time.time()
            selector = f'{{__name__=~"{"|".join(HISTORY_METRICS)}", instance="gpu-box-03"}}'
            bare_table = median_ms(bare_fleet, 5)
            bare_range = median_ms(lambda: client.post("/api/v1/query_range", data={
                "query": selector, "start": now - DAY, "end": now, "step": history_step(now - DAY, now)}), 5)
        prometheus.stop()
        print(f"  machines table filled: median {statistics.median(table_s) * 1000:.0f} ms, max "
              f"{max(table_s) * 1000:.0f} ms ({runs} runs); the same 11 questions by bare httpx: {bare_table:.0f} ms")
        print(f"  click → 24 h charts drawn: median {statistics.median(charts_s) * 1000:.0f} ms, max "
              f"{max(charts_s) * 1000:.0f} ms (charts built on this first click); the same range query by "
              f"bare httpx: {bare_range:.0f} ms")
        print(f"  click on another machine → its charts: median {statistics.median(other_s) * 1000:.0f} ms, "
              f"max {max(other_s) * 1000:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="scrapes per figure")
    parser.add_argument("--fleet-runs", type=int, default=5, help="fresh Fleet tabs timed")
    parser.add_argument("--skip-fleet", action="store_true")
    args = parser.parse_args()
    scrape_case("1,000 series", thousand_series, args.runs)
    scrape_case("8 GPUs × 3 servers × 5 models", gpu_box, args.runs)
    if not args.skip_fleet:
        fleet_case(args.fleet_runs)
    print(json.dumps({"load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
