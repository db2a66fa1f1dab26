"""The GPU tab: per-GPU charts of utilisation, memory, temperature and power, which processes
hold GPU memory, and the LLM server processes' own CPU and memory. Without an NVIDIA GPU the
tab says so once, in NVML's words, instead of drawing four empty charts; the server process
table still works.

Thin: charts follow the live buffers; the tables show each series' value at its latest read."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.buffers import LiveBuffers
from app.records import Health, HealthState
from app.runtime import Runtime
from app.units import format_value
from widgets.panel import Panel, chart_grid, read_only_table
from widgets.timeseries_plot import MetricSpec, TimeSeriesPlot

WAITING = "No GPU data yet"


def latest_rows(buffers: LiveBuffers, name: str) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of every series of ``name`` seen at that metric's latest read
    (series from older reads are gone: a process that ended, a server that stopped)."""
    latest = [(dict(labels), buffers.latest((name, labels))) for _, labels in buffers.find(name)]
    points = [(labels, p) for labels, p in latest if p is not None]
    if not points:
        return []
    newest = max(p[0] for _, p in points)
    return [(labels, p[1]) for labels, p in points if p[0] >= newest - 0.5]


def gpu_present(gpu: Health | None, buffers: LiveBuffers) -> bool:
    """Whether GPU charts have anything to show: the GPU collector found a GPU (even one it
    cannot read now), or GPU figures are arriving."""
    return (gpu is not None and gpu.state not in (HealthState.ABSENT, HealthState.UNKNOWN)
            or any(buffers.keys(name) for name in ("gpu_utilization_percent", "gpu_memory_used_bytes")))


def _fill(table: QTableWidget, rows: list[list[str]], empty: str) -> None:
    if not rows:
        rows = [[empty] + [""] * (table.columnCount() - 1)]
    table.setRowCount(len(rows))
    for r, values in enumerate(rows):
        for c, text in enumerate(values):
            item = QTableWidgetItem(text)
            if c and text and text[0].isdigit():
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)


class GpuPanel(Panel):
    title = "GPU"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.header = QLabel(WAITING)
        self.header.setWordWrap(True)
        self.util_plot = TimeSeriesPlot("Utilisation", "%", [MetricSpec("gpu_utilization_percent", "GPU {gpu}")],
                                        y_range=(0, 100))
        self.memory_plot = TimeSeriesPlot("Memory used", "B", [MetricSpec("gpu_memory_used_bytes", "GPU {gpu}")])
        self.temp_plot = TimeSeriesPlot("Temperature", "°C", [MetricSpec("gpu_temperature_celsius", "GPU {gpu}")])
        self.power_plot = TimeSeriesPlot("Power", "W", [
            MetricSpec("gpu_power_watts", "GPU {gpu} draw"),
            MetricSpec("gpu_power_limit_watts", "GPU {gpu} limit", fill=False)])
        self.plots = [self.util_plot, self.memory_plot, self.temp_plot, self.power_plot]
        self.charts = chart_grid(self.plots, 2)
        self.processes = read_only_table(["GPU", "PID", "Process", "GPU memory"])
        self.servers = read_only_table(["LLM server", "CPU", "Memory (RSS)"])
        tables = QHBoxLayout()
        self.boxes = []
        for title, table in (("Processes using GPU memory", self.processes),
                             ("LLM server processes (children included)", self.servers)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(table)
            tables.addWidget(box)
            self.boxes.append(box)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.charts, 3)
        layout.addLayout(tables, 1)

    def refresh(self, now: float) -> None:
        buffers = self.runtime.hub.buffers
        gpu = self.runtime.hub.health.get("gpu")
        absent = gpu is not None and gpu.state == HealthState.ABSENT
        message = (gpu.reason or "No NVIDIA GPU found") if gpu is not None and absent else WAITING
        present = gpu_present(gpu, buffers)
        self.charts.setVisible(present)
        self.boxes[0].setVisible(present)  # no GPU: no process holds GPU memory, by definition
        for plot in self.plots:
            plot.set_empty_text(message)
            plot.refresh(buffers, now)
        names = sorted(latest_rows(buffers, "gpu_info"), key=lambda r: int(r[0]["gpu"]))
        if names:
            text = " · ".join(f"GPU {labels['gpu']}: {labels['name']}" for labels, _ in names)
            if gpu is not None and gpu.version:
                text += f" · driver {gpu.version}"
            if gpu is not None and gpu.reason:
                text += f" · {gpu.reason}"
            self.header.setText(text)
        else:
            self.header.setText(message)
        procs = sorted(latest_rows(buffers, "gpu_process_memory_bytes"), key=lambda r: -r[1])
        _fill(self.processes, [[labels["gpu"], labels["pid"], labels["process"], format_value(value, "B")]
                               for labels, value in procs],
              "no NVIDIA GPU" if absent else "no process holds GPU memory")
        cpu = {labels["server"]: value for labels, value in latest_rows(buffers, "llm_server_process_cpu_percent")}
        rss = {labels["server"]: value for labels, value in latest_rows(buffers, "llm_server_process_rss_bytes")}
        _fill(self.servers, [[server, f"{cpu[server]:.0f} %", format_value(rss.get(server, 0.0), "B")]
                             for server in sorted(cpu)],
              "no local LLM server process found")
