"""The Usage tab's *Trends per model* page: pick a model and see, day by day, the median and p90
of its decode speed and time to first token, how often it was loaded and how long loading took,
with a line where its digest, its server's version or the GPU driver changed."""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.usage.changes import ChangeMarker
from app.usage.trends import ModelTrend, model_trend, trend_models
from widgets.background import run_in_thread
from widgets.theme import MUTED, PALETTE, muted

log = logging.getLogger(__name__)
DAY = 86400.0
EMPTY = "No measured requests in this range: trends need requests through the proxy, prompt tests or benchmarks."


def _plot(title: str, unit: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(utcOffset=None)})
    plot.setTitle(title)
    plot.setLabel("left", units=unit)
    plot.setMouseEnabled(x=False, y=False)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.addLegend(offset=(10, 5))
    return plot


class _Relay(QObject):
    models = Signal(object)
    trend = Signal(object)


class TrendsView(QWidget):
    """Reads on worker threads through its own connection; ``refresh(range, changed)`` from the
    panel's UI tick."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], names: Callable[[str], str] = str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._open = connect
        self.names = names  # a server's identity -> what the user calls it
        self.relay = _Relay()
        self.relay.models.connect(self._set_models)
        self.relay.trend.connect(self._show)
        self.picker = QComboBox()
        self.picker.setMinimumContentsLength(28)
        self.picker.currentTextChanged.connect(lambda _: self._query_trend())
        self.status = QLabel(EMPTY)
        self.status.setStyleSheet(MUTED)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        top.addWidget(self.picker)
        top.addWidget(self.status, 1)
        self.speed_plot = _plot("Decode speed per day", "tokens/s")
        self.ttft_plot = _plot("Time to first token per day", "s")
        self.loads_plot = _plot("Loads per day", "")
        self.load_time_plot = _plot("Load time per day (median)", "s")
        self.plots = [self.speed_plot, self.ttft_plot, self.loads_plot, self.load_time_plot]
        grid = QGridLayout()
        for i, plot in enumerate(self.plots):
            grid.addWidget(plot, i // 2, i % 2)
        self.changes = QLabel()
        self.changes.setWordWrap(True)
        self.changes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(grid, 1)
        layout.addWidget(self.changes)
        self.trend: ModelTrend | None = None
        self._range = (0.0, 0.0)
        self._conn: sqlite3.Connection | None = None
        self._busy = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def refresh(self, time_range: tuple[float, float], changed: bool) -> None:
        if not changed and self.trend is not None or self._busy:
            return
        self._range = time_range
        self._busy = True
        conn = self._connection()
        run_in_thread("llmmon-trend-models", lambda: trend_models(conn, *time_range), self.relay.models)

    def _set_models(self, result: object) -> None:
        self._busy = False
        if isinstance(result, Exception):
            self.status.setText(f"Cannot read requests: {result}")
            return
        assert isinstance(result, list)
        current = self.picker.currentText()
        self.picker.blockSignals(True)
        self.picker.clear()
        self.picker.addItems(result)
        if current in result:
            self.picker.setCurrentText(current)
        self.picker.blockSignals(False)
        self._query_trend()

    def _query_trend(self) -> None:
        model = self.picker.currentText()
        if not model:
            self.trend = None
            self.status.setText(EMPTY)
            self._draw()
            return
        if self._busy:
            return
        self._busy = True
        conn, (t0, t1) = self._connection(), self._range
        run_in_thread("llmmon-trend", lambda: model_trend(conn, model, t0, t1), self.relay.trend)

    def _show(self, result: object) -> None:
        self._busy = False
        if isinstance(result, Exception):
            log.warning("trend query failed: %s", result)
            self.status.setText(f"Cannot read requests: {result}")
            return
        assert isinstance(result, ModelTrend)
        self.trend = result
        if result.model != self.picker.currentText():
            self._query_trend()  # the user picked another meanwhile
            return
        measured = sum(d.requests for d in result.days)
        servers = ", ".join(self.names(s) for s in result.servers) or "no server"
        self.status.setText(f"{measured:,} successful requests on {servers}")
        self._draw()

    def _draw(self) -> None:
        for plot in self.plots:
            plot.clear()
            if plot.plotItem.legend is not None:
                plot.plotItem.legend.clear()
        trend = self.trend
        t0, t1 = self._range
        if trend is None:
            self.changes.setText("")
            return
        days = trend.days
        x = np.array([d.start + DAY / 2 for d in days])

        def series(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        def draw(plot: pg.PlotWidget, values: np.ndarray, colour: str, **style: object) -> None:
            if np.isfinite(values).any():  # a day-less line would only warn
                plot.plot(x, values, pen=pg.mkPen(colour, width=2, style=style.pop("pen_style", Qt.PenStyle.SolidLine)),
                          symbolSize=6, symbolBrush=colour, connect="finite", **style)

        for plot, (median, p90) in ((self.speed_plot, ([d.speed_median for d in days], [d.speed_p90 for d in days])),
                                    (self.ttft_plot, ([d.ttft_median for d in days], [d.ttft_p90 for d in days]))):
            draw(plot, series(median), PALETTE[0], symbol="o", name="median")
            draw(plot, series(p90), PALETTE[1], symbol="t", name="p90", pen_style=Qt.PenStyle.DashLine)
        self.loads_plot.addItem(pg.BarGraphItem(x=x, height=[d.loads for d in days], width=DAY * 0.7,
                                                brush=PALETTE[2], pen=pg.mkPen(None)))
        draw(self.load_time_plot, series([d.load_median_s for d in days]), PALETTE[3], symbol="o")
        at: dict[float, list[ChangeMarker]] = {}
        for change in trend.changes:  # one line per instant: a server update often brings a new digest
            at.setdefault(change.ts, []).append(change)
        for plot in self.plots:
            plot.setXRange(min(t0, days[0].start if days else t0), t1, padding=0.02)
            for ts, changes in at.items():
                label = " + ".join(dict.fromkeys(c.short for c in changes)) if plot is self.speed_plot else None
                line = pg.InfiniteLine(ts, angle=90, label=label,
                                       labelOpts={"position": 0.92, "color": PALETTE[5], "anchors": [(0, 0), (0, 0)]},
                                       pen=pg.mkPen(muted(PALETTE[5], 200), width=2, style=Qt.PenStyle.DotLine))
                line.setToolTip("\n".join(c.text for c in changes))
                plot.addItem(line)
        self.changes.setText(
            "<b>Changes:</b> " + " &nbsp;·&nbsp; ".join(f"{datetime.fromtimestamp(c.ts):%Y-%m-%d %H:%M} {c.text}"
                                                       for c in trend.changes)
            if trend.changes else "No change of model digest, server version or GPU driver recorded in this range.")
