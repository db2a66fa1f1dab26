"""The Fleet tab: the machines a Prometheus scrapes (each running llmmon with ``--serve-metrics``),
their LLM servers and models, tokens/s, GPU use and memory, and the alerts firing; clicking a
machine opens its charts, drawn like the local ones (``widgets/timeseries_plot.py``) from
Prometheus range queries over the toolbar's time range.

Thin and never blocking: a :class:`~app.fleet.poller.FleetPoller` per ``[[prometheus]]`` source
asks on its own thread; this tab shows its latest answers and says when Prometheus is down or
slow. Without a ``[[prometheus]]`` source it says how to set one up (docs/fleet.md).
"""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.config import PrometheusSource
from app.fleet.client import Alert
from app.fleet.model import FleetSnapshot, Machine, SeriesSet, history_step
from app.fleet.poller import FleetPoller, PollerStatus
from app.runtime import Runtime
from app.storage.history import HistorySource
from app.units import format_value
from widgets.panel import Panel, read_only_table
from widgets.theme import PALETTE
from widgets.time_window import TimeWindow
from widgets.timeseries_plot import CurveSpec, MetricSpec, TimeSeriesPlot

NO_SOURCE = (
    "No Prometheus configured.\n\n"
    "To see your other machines here: run llmmon with --serve-metrics on each of them, let a "
    "Prometheus scrape them, and tell llmmon where that Prometheus is, in config.toml:\n\n"
    '    [[prometheus]]\n    url = "http://prometheus.lan:9090"\n\n'
    "docs/fleet.md shows each step (systemd unit, scrape config, Grafana dashboard).")
# Numbers first, long texts last: on a small screen the figures stay in view.
MACHINE_COLUMNS = ["Machine", "Scraped", "Tokens/s", "GPU use", "GPU memory", "Alerts", "LLM servers", "Models"]
ALERT_COLUMNS = ["Machine", "Severity", "Alert", "What", "Since"]
PICK_MACHINE = "Click a machine above to see its charts"
FOLLOW_UP_MS = 50
WARN = PALETTE[1]
BAD = PALETTE[5]
GOOD = PALETTE[2]


class FleetPlot(TimeSeriesPlot):
    """A chart of one remote machine: it follows the window's time range but reads Prometheus'
    answers, never this machine's database."""

    follows_session = False  # this machine's session says nothing about another machine's data

    def attach(self, view: TimeWindow, history: HistorySource | None = None) -> None:
        self.view = view
        view.changed.connect(self.force_redraw)


def machine_charts() -> list[FleetPlot]:
    """The charts of one machine: the Overview's, from its exported series."""
    return [
        FleetPlot("Generation speed", "tokens/s", [
            MetricSpec("llm_tokens_per_second", "{server} {model}"),
            MetricSpec("vllm_generation_tokens_per_second", "{server} {model}"),
            MetricSpec("llamacpp_generation_tokens_per_second", "{server}")]),
        FleetPlot("Time to first token", "s", [
            MetricSpec("llm_ttft_seconds", "{server} p50", (("quantile", "0.5"),)),
            MetricSpec("llm_ttft_seconds", "{server} p90", (("quantile", "0.9"),))]),
        FleetPlot("vLLM queue", "requests", [
            MetricSpec("vllm_requests_running", "{server} running"),
            MetricSpec("vllm_requests_waiting", "{server} waiting")]),
        FleetPlot("GPU utilisation", "%", [MetricSpec("gpu_utilization_percent", "GPU {gpu}")], y_range=(0, 100)),
        FleetPlot("GPU memory used", "B", [MetricSpec("gpu_memory_used_bytes", "GPU {gpu}")]),
        FleetPlot("CPU and memory", "%", [
            CurveSpec(("system_cpu_percent", ()), "CPU"),
            CurveSpec(("system_memory_percent", ()), "Memory")], y_range=(0, 100)),
    ]


def empty_texts(instance: str) -> list[str]:
    """What each of :func:`machine_charts` says while it has nothing to draw for ``instance``."""
    none = f"No data from Prometheus for {instance} in this time range"
    no_gpu = f"No GPU data from {instance}"
    return [none, none, none, no_gpu, no_gpu, none]


def _item(text: str, colour: str = "", tooltip: str = "", right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if colour:
        item.setForeground(QBrush(QColor(colour)))
    if tooltip:
        item.setToolTip(tooltip)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def machine_cells(m: Machine) -> list[QTableWidgetItem]:
    """One row of the machines table."""
    scraped = {True: ("up", GOOD), False: ("down", BAD), None: ("not scraped", WARN)}[m.scraped]
    servers = ", ".join(s.name + ("" if s.up else " (down)") for s in m.servers) or "none"
    servers_colour = BAD if any(not s.up for s in m.servers) else ""
    servers_tip = "\n".join(f"{s.name} ({s.kind}): {'up' if s.up else 'down'}" for s in m.servers)
    models = ", ".join(sorted({model for _, model in m.models})) or "–"
    tokens = f"{m.tokens_per_second:.1f}" if m.tokens_per_second is not None else "–"
    if m.gpus == 0 and m.gpu_utilization_percent is None:
        gpu_use = gpu_memory = "no GPU"
    else:
        gpu_use = f"{m.gpu_utilization_percent:.0f} %" if m.gpu_utilization_percent is not None else "–"
        gpu_memory = (f"{format_value(m.gpu_memory_used_bytes, 'B')} / {format_value(m.gpu_memory_total_bytes, 'B')}"
                      if m.gpu_memory_used_bytes is not None and m.gpu_memory_total_bytes else "–")
    worst = max((a.label("severity") for a in m.alerts), key=("info", "warning", "critical").index, default="")
    alerts = f"{len(m.alerts)} firing" if m.alerts else "none"
    return [
        _item(m.instance), _item(scraped[0], scraped[1]),
        _item(tokens, right=True), _item(gpu_use, right=True), _item(gpu_memory, right=True),
        _item(alerts, BAD if worst == "critical" else WARN if m.alerts else "",
              "\n".join(f"{a.name}: {a.description or a.summary}" for a in m.alerts)),
        _item(servers, servers_colour, servers_tip),
        _item(models, tooltip="\n".join(f"{model} on {server}" for server, model in m.models)),
    ]


def alert_cells(a: Alert) -> list[QTableWidgetItem]:
    severity = a.label("severity")
    details = ", ".join(f"{k}={v}" for k, v in a.labels if k not in ("instance", "job", "severity"))
    since = a.active_at[11:19] if len(a.active_at) >= 19 else a.active_at  # RFC 3339, UTC
    return [_item(a.label("instance")), _item(severity, BAD if severity == "critical" else WARN),
            _item(a.summary or a.name, tooltip=a.name),
            _item(a.description or details, tooltip=details), _item(f"{since} UTC" if since else "")]


def status_text(source: PrometheusSource, status: PollerStatus, snapshot: FleetSnapshot | None) -> tuple[str, str]:
    """The status line and its colour."""
    where = f"Prometheus “{source.name}” at {source.url}" if source.name else f"Prometheus at {source.url}"
    last = time.strftime("%H:%M:%S", time.localtime(status.last_ok_at)) if status.last_ok_at else ""
    if status.state == "down":
        kept = f" Showing the last reading, from {last}." if last else ""
        return f"{where} is not answering: {status.error}.{kept}", BAD
    if status.state == "starting":
        waited = f" ({status.waiting_s:.0f} s)" if status.waiting_s >= 1 else ""
        return f"Asking {where}…{waited}", ""
    machines = len(snapshot.machines) if snapshot else 0
    text = f"{where}: {machines} machine{'s' if machines != 1 else ''}, read at {last} in {status.took_s * 1000:.0f} ms"
    if status.state == "slow":
        waiting = f"; waiting {status.waiting_s:.0f} s for the next answer" if status.waiting_s >= 1 else ""
        return f"{text} — slow{waiting}", WARN
    return text, ""


def stop_all(pollers: dict[int, FleetPoller]) -> None:
    for poller in pollers.values():
        poller.stop()


class FleetPanel(Panel):
    title = "Fleet"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.sources = list(runtime.settings.prometheus)
        self.pollers: dict[int, FleetPoller] = {}
        self.selected = ""
        self.charts: list[FleetPlot] = []
        self._shown: FleetSnapshot | None = None
        self._drawn: SeriesSet | None = None
        self._follow_up = False

        self.source_box = QComboBox()
        self.source_box.addItems([s.name or s.url for s in self.sources])
        self.source_box.setVisible(len(self.sources) > 1)
        self.source_box.currentIndexChanged.connect(lambda _: self._source_changed())
        self.status = QLabel(NO_SOURCE if not self.sources else "")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(self.source_box)
        top.addWidget(self.status, 1)

        self.machines = read_only_table(MACHINE_COLUMNS)
        self.machines.itemSelectionChanged.connect(self._selection_changed)
        self.alerts = read_only_table(ALERT_COLUMNS)
        tables = QSplitter(Qt.Orientation.Horizontal)
        tables.addWidget(self.machines)
        tables.addWidget(self.alerts)
        tables.setStretchFactor(0, 3)
        tables.setStretchFactor(1, 2)
        self.machine_label = QLabel(PICK_MACHINE)
        self.charts_box = QWidget()
        self.charts_grid = QGridLayout(self.charts_box)
        self.charts_grid.setContentsMargins(0, 0, 0, 0)
        self.body = QWidget()  # hidden without a source: only the how-to text shows
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(tables, 2)
        body.addWidget(self.machine_label)
        body.addWidget(self.charts_box, 5)  # the charts get most of the height, as on the Overview
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.body, 1)
        self.body.setVisible(bool(self.sources))
        pollers = self.pollers  # not self: the slot must not keep the panel alive
        self.destroyed.connect(lambda *_: stop_all(pollers))

    # ------------------------------------------------------------------ sources
    def poller(self) -> FleetPoller | None:
        """The poller of the chosen source (made on first use), or None without sources."""
        if not self.sources:
            return None
        index = max(0, self.source_box.currentIndex())
        if index not in self.pollers:
            self.pollers[index] = FleetPoller(self.sources[index])
        return self.pollers[index]

    def _source_changed(self) -> None:
        self._shown = None
        self._select("")

    def shutdown(self) -> None:
        """Stop asking Prometheus (the window is closing)."""
        stop_all(self.pollers)

    # ------------------------------------------------------------------ selection
    def _selection_changed(self) -> None:
        rows = self.machines.selectionModel().selectedRows()
        if rows:
            self._select(self._instance_at(rows[0].row()))

    def _instance_at(self, row: int) -> str:
        item = self.machines.item(row, 0)
        return item.text() if item is not None else ""

    def _select(self, instance: str) -> None:
        if instance == self.selected:
            return
        self.selected = instance
        if instance and not self.charts:  # built once (~30 ms a chart), then reused for each machine
            self.charts = machine_charts()
            for i, plot in enumerate(self.charts):
                if self.view is not None:
                    plot.attach(self.view)
                self.charts_grid.addWidget(plot, i // 3, i % 3)
        for plot, text in zip(self.charts, empty_texts(instance), strict=True):
            plot.forget_discovered()
            plot.set_empty_text(text)
        self.charts_box.setVisible(bool(instance))
        self.machine_label.setText(f"{instance}: loading its charts from Prometheus…" if instance else PICK_MACHINE)
        self._drawn = None
        self.refresh(time.time())  # ask now, not at the window's next tick

    def select_machine(self, instance: str) -> bool:
        """Select a machine's row as a click would; False when it is not listed."""
        for row in range(self.machines.rowCount()):
            if self._instance_at(row) == instance:
                self.machines.selectRow(row)
                return True
        return False

    # ------------------------------------------------------------------ redraw
    def refresh(self, now: float) -> None:
        poller = self.poller()
        if poller is None:
            return
        if self.view is not None:
            (t0, t1), live = self.view.range(now, from_session=False), self.view.live
        else:
            (t0, t1), live = (now - 300.0, now), True
        poller.want(self.selected, t0, t1, live)
        snapshot, status = poller.snapshot(), poller.status()
        text, colour = status_text(poller.source, status, snapshot)
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {colour}; font-weight: bold" if colour else "")
        if snapshot is not None and snapshot is not self._shown:
            self._fill(snapshot)
        history = poller.history()
        waiting = snapshot is None or bool(self.selected) and (history is None or history.instance != self.selected)
        if waiting and status.state != "down" and not self._follow_up and self.isVisible():
            # the answer comes on the poller's thread: look again soon instead of at the next tick
            self._follow_up = True
            QTimer.singleShot(FOLLOW_UP_MS, self._look_again)
        if self.charts and history is not None and history.instance == self.selected:
            if history is not self._drawn:
                step = history_step(history.start, history.end)
                self.machine_label.setText(f"{self.selected}: {len(history.series)} series from Prometheus, "
                                           f"one point per {step:.0f} s")
                self._drawn = history
            for plot in self.charts:
                plot.refresh(history, now)

    def _look_again(self) -> None:
        self._follow_up = False
        if self.isVisible():
            self.refresh(time.time())

    def _fill(self, snapshot: FleetSnapshot) -> None:
        self._shown = snapshot
        self.machines.blockSignals(True)
        self.machines.setRowCount(len(snapshot.machines))
        for r, machine in enumerate(snapshot.machines):
            for c, item in enumerate(machine_cells(machine)):
                self.machines.setItem(r, c, item)
            if machine.instance == self.selected:
                self.machines.selectRow(r)
        self.machines.blockSignals(False)
        self.alerts.setRowCount(max(1, len(snapshot.alerts)))
        if not snapshot.alerts:
            self.alerts.setItem(0, 0, _item("no alert firing"))
            for c in range(1, len(ALERT_COLUMNS)):
                self.alerts.setItem(0, c, _item(""))
        for r, alert in enumerate(snapshot.alerts):
            for c, item in enumerate(alert_cells(alert)):
                self.alerts.setItem(r, c, item)
