"""The Overview tab: six charts that answer "is it fast, is it busy, is the machine coping"."""
from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from app.records import HealthState
from app.runtime import Runtime
from app.summary import SERVER_KINDS
from widgets.panel import Panel
from widgets.timeseries_plot import CurveSpec, MetricSpec, TimeSeriesPlot

NO_SERVER = ("No LLM server found yet.\nStart Ollama (:11434), vLLM (:8000) or llama.cpp (:8080),"
             " or add a server in config.toml.")
NO_TRAFFIC = "No generation yet.\nPoint your clients at llmmon's proxy (Requests tab) to measure them."


def gpu_absent_text(reason: str) -> str:
    """The no-GPU message, with NVML's own words when the collector gave them."""
    if "no nvidia gpu" in reason.lower():
        return reason
    return "No NVIDIA GPU found" + (f" ({reason})" if reason else "")


class OverviewPanel(Panel):
    title = "Overview"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.tokens_plot = TimeSeriesPlot("Generation speed", "tokens/s", [
            MetricSpec("llm_tokens_per_second", "{server} {model}"),
            MetricSpec("vllm_generation_tokens_per_second", "{server} {model}"),
            MetricSpec("llamacpp_generation_tokens_per_second", "{server}")])
        self.ttft_plot = TimeSeriesPlot("Time to first token", "s", [
            MetricSpec("llm_ttft_seconds", "{server} p50", (("quantile", "0.5"),)),
            MetricSpec("llm_ttft_seconds", "{server} p90", (("quantile", "0.9"),)),
            MetricSpec("vllm_ttft_seconds", "{server} p50", (("quantile", "0.5"),)),
            MetricSpec("vllm_ttft_seconds", "{server} p90", (("quantile", "0.9"),))])
        self.requests_plot = TimeSeriesPlot("Requests in flight", "requests", [
            MetricSpec("llm_requests_active", "{server} active (proxy)"),
            MetricSpec("vllm_requests_running", "{server} running"),
            MetricSpec("vllm_requests_waiting", "{server} waiting"),
            MetricSpec("llamacpp_requests_processing", "{server} processing")])
        self.gpu_util_plot = TimeSeriesPlot("GPU utilisation", "%", [
            MetricSpec("gpu_utilization_percent", "GPU {gpu}")], y_range=(0, 100))
        self.gpu_memory_plot = TimeSeriesPlot("GPU memory used", "B", [
            MetricSpec("gpu_memory_used_bytes", "GPU {gpu}")])
        self.system_plot = TimeSeriesPlot("CPU and memory", "%", [
            CurveSpec(("system_cpu_percent", ()), "CPU"),
            CurveSpec(("system_memory_percent", ()), "Memory")], y_range=(0, 100))
        self.plots = [self.tokens_plot, self.ttft_plot, self.requests_plot,
                      self.gpu_util_plot, self.gpu_memory_plot, self.system_plot]
        grid = QGridLayout(self)
        for i, plot in enumerate(self.plots):
            grid.addWidget(plot, i // 3, i % 3)

    def refresh(self, now: float) -> None:
        health = list(self.runtime.hub.health.values())
        servers_up = any(h.kind in SERVER_KINDS and h.state == HealthState.UP for h in health)
        for plot in (self.tokens_plot, self.ttft_plot, self.requests_plot):
            plot.set_empty_text(NO_TRAFFIC if servers_up else NO_SERVER)
        gpu = next((h for h in health if h.kind == "gpu"), None)
        gpu_text = (gpu_absent_text(gpu.reason)
                    if gpu is not None and gpu.state == HealthState.ABSENT else "No GPU data yet")
        for plot in (self.gpu_util_plot, self.gpu_memory_plot):
            plot.set_empty_text(gpu_text)
        buffers = self.runtime.hub.buffers
        for plot in self.plots:
            plot.refresh(buffers, now)
