"""The Overview tab: the charts that answer "is it fast, is it busy, is the machine coping".

Each legend says where its figure comes from: the server's own counters or llmmon's proxy.
The GPU charts are there only when a GPU is (without one, the other charts take the room), and
an empty chart says what would fill it.
"""
from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from app.records import HealthState
from app.runtime import Runtime
from app.server_kinds import KINDS, is_server_kind, own_series, server_kind, where_to_start
from widgets.gpu_panel import gpu_present
from widgets.panel import ADD_SERVER, Panel
from widgets.timeseries_plot import CurveSpec, MetricSpec, TimeSeriesPlot

NO_SERVER = f"No LLM server found yet.\nStart {where_to_start()},\nor add one in {ADD_SERVER}."
NO_TRAFFIC = "No generation yet.\nPoint your clients at llmmon's proxy (Requests tab) to measure them."
TTFT_KINDS = [k for k in KINDS if k.figures.ttft]  # servers whose own metrics report time to first token
TTFT_SOURCES = ("Time to first token comes from llmmon's proxy (send requests through it: its address"
                f" is in the Requests tab) or from {' or '.join(k.display_name for k in TTFT_KINDS)}'s /metrics.")


def ttft_empty_text(kinds_up: set[str]) -> str:
    """What the TTFT chart says while empty: what would fill it, and why the servers that are
    up do not (llama.cpp and Ollama report no TTFT of their own)."""
    if not kinds_up:
        return NO_SERVER
    if kinds_up & {k.id for k in TTFT_KINDS}:
        return "No request finished in the last minute.\n" + TTFT_SOURCES
    silent = " and ".join(sorted(server_kind(k).display_name for k in kinds_up))
    return f"No TTFT measured yet: {silent} report{'s' if ' and ' not in silent else ''} none.\n{TTFT_SOURCES}"


def gpu_absent_text(reason: str) -> str:
    """The no-GPU message, with NVML's own words when the collector gave them."""
    if "no nvidia gpu" in reason.lower():
        return reason
    return "No NVIDIA GPU found" + (f" ({reason})" if reason else "")


class OverviewPanel(Panel):
    title = "Overview"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        # The proxy's figures, then each server kind's own counters (app/server_kinds.py).
        self.tokens_plot = TimeSeriesPlot("Generation speed", "tokens/s", [
            MetricSpec("llm_tokens_per_second", "{server} {model} · via proxy"),
            *[MetricSpec(name, "{server} server counters") for name in own_series("tokens_per_second")]])
        ttft_sources = [("llm_ttft_seconds", "via proxy"), *[(n, "server metrics") for n in own_series("ttft")]]
        self.ttft_plot = TimeSeriesPlot("Time to first token", "s", [
            MetricSpec(name, f"{{server}} {label} {source}", (("quantile", q),))
            for name, source in ttft_sources for q, label in (("0.5", "p50"), ("0.9", "p90"))])
        self.requests_plot = TimeSeriesPlot("Requests in flight", "requests", [
            MetricSpec("llm_requests_active", "{server} via proxy"),
            *[MetricSpec(name, "{server} processing") for name in own_series("requests_active")],
            *[MetricSpec(name, "{server} waiting") for name in own_series("requests_waiting")]])
        self.gpu_util_plot = TimeSeriesPlot("GPU utilisation", "%", [
            MetricSpec("gpu_utilization_percent", "GPU {gpu}")], y_range=(0, 100))
        self.gpu_memory_plot = TimeSeriesPlot("GPU memory used", "B", [
            MetricSpec("gpu_memory_used_bytes", "GPU {gpu}")])
        self.system_plot = TimeSeriesPlot("CPU and memory", "%", [
            CurveSpec(("system_cpu_percent", ()), "CPU"),
            CurveSpec(("system_memory_percent", ()), "Memory")], y_range=(0, 100))
        self.plots = [self.tokens_plot, self.ttft_plot, self.requests_plot,
                      self.gpu_util_plot, self.gpu_memory_plot, self.system_plot]
        self.grid = QGridLayout(self)
        self.grid.setSpacing(6)
        self.shown: list[TimeSeriesPlot] = []
        self._lay_out(self.plots)

    def _lay_out(self, plots: list[TimeSeriesPlot]) -> None:
        """Place ``plots`` in a grid (3 wide for 5 or more, else 2) and hide the others."""
        if plots == self.shown:
            return
        for plot in self.plots:
            self.grid.removeWidget(plot)
        columns = 3 if len(plots) > 4 else 2
        for i, plot in enumerate(plots):
            self.grid.addWidget(plot, i // columns, i % columns)
        for plot in self.plots:  # after addWidget: a parentless widget made visible is a window
            plot.setVisible(plot in plots)
        for c in range(3):
            self.grid.setColumnStretch(c, 1 if c < columns else 0)
        self.shown = list(plots)

    def refresh(self, now: float) -> None:
        health = list(self.runtime.hub.health.values())
        kinds_up = {h.kind for h in health if is_server_kind(h.kind) and h.state == HealthState.UP}
        for plot in (self.tokens_plot, self.requests_plot):
            plot.set_empty_text(NO_TRAFFIC if kinds_up else NO_SERVER)
        self.ttft_plot.set_empty_text(ttft_empty_text(kinds_up))
        gpu = next((h for h in health if h.kind == "gpu"), None)
        gpu_text = (gpu_absent_text(gpu.reason)
                    if gpu is not None and gpu.state == HealthState.ABSENT else "No GPU data yet")
        for plot in (self.gpu_util_plot, self.gpu_memory_plot):
            plot.set_empty_text(gpu_text)
        buffers = self.runtime.hub.buffers
        # Without a GPU (or before the GPU collector has looked) its charts only take room.
        has_gpu = gpu_present(gpu, buffers)
        self._lay_out([p for p in self.plots if has_gpu or p not in (self.gpu_util_plot, self.gpu_memory_plot)])
        for plot in self.shown:
            plot.refresh(buffers, now)
