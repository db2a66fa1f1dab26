"""``resources/grafana/llmmon.json``: a dashboard Grafana imports as is (one Prometheus data
source input, unique ids, a layout on Grafana's 24-column grid), and every metric its queries
name is in a live scrape of the exporter of a running llmmon that watches every kind of source
(simulated Ollama, vLLM and llama.cpp servers, a GPU through a fake NVML, requests through the
real proxy, one of them failing). (The real Prometheus runs every query in
tests/prometheus/test_grafana_queries.py.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from app.config import ExporterSettings
from app.exporter import MetricsExporter
from app.hub import Hub
from app.proxy import ProxyServer
from app.request_stats import RequestStats
from collectors.gpu import GpuCollector
from collectors.llamacpp import LlamaCppCollector
from collectors.ollama import OllamaCollector
from collectors.system import SystemCollector
from collectors.vllm import VllmCollector
from tests.collectors.test_discovery import llamaserver
from tests.collectors.test_gpu import FakeNvml, rtx
from tests.sim.ollama import SimOllama
from tests.sim.upstream import SimUpstream
from tests.sim.vllm import SimVllm
from tests.support import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "resources" / "grafana" / "llmmon.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def queries(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)          # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)         # matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return {m.group() for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*+(?!\s*\()", expr)
            if m.group() not in _KEYWORDS}


def test_importable_as_is() -> None:
    board = dashboard()
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["uid"] == "llmmon-fleet" and board["title"] == "llmmon fleet"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        grid = p["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, p["title"]
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == DATASOURCE and p["targets"], p["title"]
            assert all(t["datasource"] == DATASOURCE and t["expr"] for t in p["targets"]), p["title"]
    (variable,) = board["templating"]["list"]
    assert variable["name"] == "instance" and variable["datasource"] == DATASOURCE
    titles = " ".join(p["title"] for p in board["panels"] if p["type"] == "row")
    for section in ("Overview", "Models", "GPU", "vLLM", "Errors"):
        assert section in titles


def test_metric_names_of_promql() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, model) (rate(llm_request_ttft_seconds_bucket'
                        '{instance=~"$instance"}[$__rate_interval])))') == {"llm_request_ttft_seconds_bucket"}
    assert metric_names('count(llmmon_source_up{kind="x"} == 0) or vector(0)') == {"llmmon_source_up"}


def test_every_metric_of_the_dashboard_is_in_a_live_scrape() -> None:
    with SimOllama() as ollama, SimVllm() as vllm, llamaserver() as llama, SimUpstream() as upstream:
        hub = Hub(None)
        hub.add_collectors([SystemCollector(interval=0.5), OllamaCollector(ollama.url, interval=0.5),
                            VllmCollector(vllm.url, interval=0.5), LlamaCppCollector(llama.url, interval=0.5),
                            GpuCollector(interval=0.5, nvml=FakeNvml([rtx()]))])
        stats = RequestStats(hub.publish, interval=0.5)
        hub.subscribe(stats)
        # a cap of 2 series per metric: so the dropped-series counter has something to count
        exporter = MetricsExporter.for_hub(hub, ExporterSettings(True, "127.0.0.1", 0, max_series_per_metric=2))
        proxy = ProxyServer(upstream.url, publish=hub.publish)
        proxy.start()
        hub.start()
        stats.start()
        exporter.start()
        try:
            wait_until(lambda: hub.buffers.find("vllm_requests_running"), timeout=15, what="a first vLLM scrape")
            vllm.advance()  # requests were served: rates and percentiles
            upstream.chunk_delay_s = 0.002  # tokens apart in time: an inter-token time to measure
            httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "m", "messages": [], "stream": True},
                       timeout=30)  # no usage in the stream: tokens estimated, not counted
            httpx.post(f"{proxy.url}/api/chat", json={"model": "llama3", "messages": []}, timeout=30)  # counted
            upstream.fail = (500, "vllm_enginedead_500.json")
            httpx.post(f"{proxy.url}/api/chat", json={"model": "llama3", "messages": []}, timeout=30)
            wanted = set().union(*(metric_names(q) for q in queries(dashboard())))
            missing: set[str] = set()

            def scraped() -> bool:
                page = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics").text
                names = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if not line.startswith("#")}
                missing.clear()
                missing.update(wanted - names)
                return not missing
            try:
                wait_until(scraped, timeout=20, what="every dashboard metric in the scrape")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; missing: {sorted(missing)}") from None
            assert len(wanted) >= 30  # the parser found the names (an empty set would pass vacuously)
        finally:
            exporter.stop()
            stats.stop()
            hub.stop()
            proxy.stop()
