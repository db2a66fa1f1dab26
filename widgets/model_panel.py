"""The per-model view: pick a model and see its tokens/s, TTFT, request count and errors over
the chosen time range — "did this model get slower?". Reads the requests table (what the
proxy and prompt tests measured), so it works for any range, live or a past session."""
from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.runtime import Runtime
from app.storage.queries import model_requests, request_models
from widgets.panel import Panel
from widgets.theme import PALETTE

log = logging.getLogger(__name__)
REQUERY_S = 5.0
EMPTY = ("No requests measured in this range.\n"
         "Requests are measured when clients go through llmmon's proxy (Requests tab).")


def _plot(title: str, unit: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(utcOffset=None)})
    plot.setTitle(title)
    plot.setLabel("left", units=unit)
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setMouseEnabled(x=False, y=False)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    return plot


class ModelPanel(Panel):
    title = "Models"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.picker = QComboBox()
        self.picker.setMinimumContentsLength(30)
        self.picker.currentTextChanged.connect(lambda _: self._redraw_model())
        self.status = QLabel(EMPTY)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        top.addWidget(self.picker)
        top.addWidget(self.status, 1)
        self.speed_plot = _plot("Decode speed per request", "tokens/s")
        self.ttft_plot = _plot("Time to first token per request", "s")
        self.count_plot = _plot("Requests per minute", "req/min")
        self.error_plot = _plot("Errors per minute", "err/min")
        self.speed = self.speed_plot.plot([], [], pen=None, symbol="o", symbolSize=6, symbolBrush=PALETTE[0])
        self.ttft = self.ttft_plot.plot([], [], pen=None, symbol="o", symbolSize=6, symbolBrush=PALETTE[1])
        self.count = pg.BarGraphItem(x=[], height=[], width=50, brush=PALETTE[2])
        self.errors = pg.BarGraphItem(x=[], height=[], width=50, brush=PALETTE[5])
        self.count_plot.addItem(self.count)
        self.error_plot.addItem(self.errors)
        grid = QGridLayout()
        for i, plot in enumerate((self.speed_plot, self.ttft_plot, self.count_plot, self.error_plot)):
            grid.addWidget(plot, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(grid, 1)
        self._last_query = float("-inf")
        self._range = (0.0, 0.0)
        self.rows = np.empty((0, 5))

    def refresh(self, now: float) -> None:
        t0, t1 = self.view.range(now) if self.view else (now - 300.0, now)
        if now - self._last_query < REQUERY_S and self._range[1] - self._range[0] == t1 - t0:
            return
        self._last_query = now
        self._range = (t0, t1)
        try:
            models = request_models(self.db.get(), t0, t1)
        except sqlite3.Error as exc:
            self.status.setText(f"Cannot read requests: {exc}")
            self.db.reset()
            return
        current = self.picker.currentText()
        if models != [self.picker.itemText(i) for i in range(self.picker.count())]:
            self.picker.blockSignals(True)
            self.picker.clear()
            self.picker.addItems(models)
            if current in models:
                self.picker.setCurrentText(current)
            self.picker.blockSignals(False)
        self._redraw_model()

    def _redraw_model(self) -> None:
        model = self.picker.currentText()
        t0, t1 = self._range
        self.rows = model_requests(self.db.get(), model, t0, t1) if model else np.empty((0, 5))
        rows = self.rows
        ts = rows[:, 0]
        ok_speed = ~np.isnan(rows[:, 1])
        ok_ttft = ~np.isnan(rows[:, 2])
        self.speed.setData(ts[ok_speed], rows[ok_speed, 1])
        self.ttft.setData(ts[ok_ttft], rows[ok_ttft, 2])
        edges = np.arange(np.floor(t0 / 60) * 60, t1 + 60, 60)
        counts, _ = np.histogram(ts, bins=edges)
        errors, _ = np.histogram(ts[rows[:, 4] > 0], bins=edges)
        centres = edges[:-1] + 30
        self.count.setOpts(x=centres, height=counts, width=50)
        self.errors.setOpts(x=centres, height=errors, width=50)
        for plot in (self.speed_plot, self.ttft_plot, self.count_plot, self.error_plot):
            plot.setXRange(t0, t1, padding=0)
        if len(rows):
            speeds = rows[ok_speed, 1]
            median = f", median {np.median(speeds):.1f} tokens/s" if len(speeds) else ""
            self.status.setText(f"{len(rows)} requests, {int(rows[:, 4].sum())} errors{median}")
        else:
            self.status.setText(EMPTY if not model else f"No requests of {model} in this range")
