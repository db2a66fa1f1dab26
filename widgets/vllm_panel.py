"""The vLLM tab: what each vLLM server reports about itself (its Prometheus ``/metrics``):
the queue (running and waiting requests), KV-cache usage, token throughput, and time to first
token and inter-token latency as p50/p90/p99 over the last minute. With no vLLM server seen,
one message says how to add one instead of six empty charts."""
from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.records import HealthState
from app.runtime import Runtime
from widgets.panel import ADD_SERVER, Panel, chart_grid, note_label
from widgets.timeseries_plot import MetricSpec, TimeSeriesPlot

NO_VLLM = (f"No vLLM server found.\nStart vLLM on :8000, or add it in {ADD_SERVER} with Kind vLLM\n"
           "(and its API key there if it needs one).")
NO_REQUESTS = "No request finished in the last minute"


def _quantiles(metric: str) -> list[MetricSpec]:
    return [MetricSpec(metric, "{server} " + f"p{q[2:].ljust(2, '0')}", (("quantile", q),))
            for q in ("0.5", "0.9", "0.99")]


class VllmPanel(Panel):
    title = "vLLM"
    server_kind = "vllm"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.queue_plot = TimeSeriesPlot("Requests", "requests", [
            MetricSpec("vllm_requests_running", "{server} running"),
            MetricSpec("vllm_requests_waiting", "{server} waiting")])
        self.kv_plot = TimeSeriesPlot("KV-cache usage", "%", [
            MetricSpec("vllm_kv_cache_usage_ratio", "{server} {model}", scale=100.0)], y_range=(0, 100))
        self.tokens_plot = TimeSeriesPlot("Tokens per second", "tokens/s", [
            MetricSpec("vllm_generation_tokens_per_second", "{server} generated"),
            MetricSpec("vllm_prompt_tokens_per_second", "{server} prompt")])
        self.ttft_plot = TimeSeriesPlot("Time to first token (last minute)", "s", _quantiles("vllm_ttft_seconds"))
        self.itl_plot = TimeSeriesPlot("Inter-token latency (last minute)", "s", _quantiles("vllm_itl_seconds"))
        self.e2e_plot = TimeSeriesPlot("Request latency, end to end (last minute)", "s",
                                       _quantiles("vllm_e2e_latency_seconds"))
        self.plots = [self.queue_plot, self.kv_plot, self.tokens_plot, self.ttft_plot, self.itl_plot, self.e2e_plot]
        self.charts = chart_grid(self.plots, 3)
        self.note = note_label(NO_VLLM)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.charts, 1)
        self.charts.hide()

    def refresh(self, now: float) -> None:
        servers = [h for h in self.runtime.hub.health.values() if h.kind == "vllm"]
        up = [h for h in servers if h.state == HealthState.UP]
        if not servers:
            text = NO_VLLM
        elif not up:
            text = "vLLM not reachable: " + "; ".join(f"{h.source}: {h.reason or h.state.value}" for h in servers)
        else:
            text = "No data yet"
        self.note.setText(text)
        self.note.setVisible(not servers)
        self.charts.setVisible(bool(servers))
        for plot in self.plots:
            plot.set_empty_text(NO_REQUESTS if up and plot in (self.ttft_plot, self.itl_plot, self.e2e_plot)
                                else text)
            plot.refresh(self.runtime.hub.buffers, now)
