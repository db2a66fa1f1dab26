"""The Overview tab: the machine's CPU and memory, live."""
from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.runtime import Runtime
from widgets.panel import Panel
from widgets.timeseries_plot import CurveSpec, TimeSeriesPlot


class OverviewPanel(Panel):
    title = "Overview"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None, window_s: float = 300.0) -> None:
        super().__init__(runtime, parent)
        self.window_s = window_s
        self.system_plot = TimeSeriesPlot(
            "CPU and memory", "%",
            [CurveSpec(("system_cpu_percent", ()), "CPU"),
             CurveSpec(("system_memory_percent", ()), "Memory")],
            y_range=(0, 100))
        layout = QVBoxLayout(self)
        layout.addWidget(self.system_plot)

    def refresh(self, now: float) -> None:
        self.system_plot.refresh(self.runtime.hub.buffers, now, self.window_s)
