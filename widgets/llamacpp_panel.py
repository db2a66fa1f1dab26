"""The llama.cpp tab: what each ``llama-server`` reports about itself (its ``/metrics`` and
``/slots``): token throughput, slot occupancy, queued requests and decode calls. With no
llama.cpp server seen, one message says how to add one instead of four empty charts."""
from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.records import HealthState
from app.runtime import Runtime
from widgets.panel import ADD_SERVER, Panel, chart_grid, note_label
from widgets.timeseries_plot import MetricSpec, TimeSeriesPlot

NO_LLAMACPP = ("No llama.cpp server found.\nStart llama-server on :8080 (with --metrics for token"
               f" counts),\nor add it in {ADD_SERVER} with Kind llama.cpp.")
NO_METRICS = "No /metrics from llama-server.\nRestart it with --metrics to see these figures."


class LlamaCppPanel(Panel):
    title = "llama.cpp"
    server_kind = "llamacpp"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.tokens_plot = TimeSeriesPlot("Tokens per second (server counters)", "tokens/s", [
            MetricSpec("llamacpp_generation_tokens_per_second", "{server} generated"),
            MetricSpec("llamacpp_prompt_tokens_per_second", "{server} prompt")])
        self.slots_plot = TimeSeriesPlot("Slots", "slots", [
            MetricSpec("llamacpp_busy_slots", "{server} busy"),
            MetricSpec("llamacpp_slots_total", "{server} total", fill=False)])
        self.queue_plot = TimeSeriesPlot("Requests", "requests", [
            MetricSpec("llamacpp_requests_processing", "{server} processing"),
            MetricSpec("llamacpp_requests_deferred", "{server} deferred (waiting for a slot)")])
        self.decode_plot = TimeSeriesPlot("Decode calls", "calls/s", [
            MetricSpec("llamacpp_decode_calls_per_second", "{server} llama_decode() calls")])
        self.plots = [self.tokens_plot, self.slots_plot, self.queue_plot, self.decode_plot]
        self.charts = chart_grid(self.plots, 2)
        self.note = note_label(NO_LLAMACPP)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.charts, 1)
        self.charts.hide()

    def refresh(self, now: float) -> None:
        servers = [h for h in self.runtime.hub.health.values() if h.kind == "llamacpp"]
        up = [h for h in servers if h.state == HealthState.UP]
        if not up:
            text = NO_LLAMACPP if not servers else "llama.cpp server down: " + "; ".join(
                f"{h.source}: {h.reason or h.state.value}" for h in servers)
        elif all("--metrics" in h.reason for h in up):
            text = NO_METRICS
        else:
            text = "No data yet"
        self.note.setText(text)
        self.note.setVisible(not servers)
        self.charts.setVisible(bool(servers))
        for plot in self.plots:
            plot.set_empty_text(text)
            plot.refresh(self.runtime.hub.buffers, now)
