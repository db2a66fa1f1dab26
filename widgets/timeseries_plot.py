"""A live time-series chart: one pyqtgraph plot whose curves are bound to series in the live
buffers. Curves are created once and updated with ``setData`` only when their series changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from app.buffers import LiveBuffers
from app.records import SeriesKey
from widgets.theme import colour_for


@dataclass(frozen=True)
class CurveSpec:
    """Which series a curve shows and how it is labelled in the legend."""

    key: SeriesKey
    label: str
    colour: str = ""


class TimeSeriesPlot(pg.PlotWidget):
    """A chart with a time axis, a unit on the value axis and a legend.

    Args:
        title: shown above the chart.
        unit: the value axis unit (pyqtgraph adds SI prefixes, e.g. ``"B"`` → ``GB``).
        y_range: fixed value range, e.g. ``(0, 100)`` for percentages; ``None`` autoscales.
    """

    def __init__(self, title: str, unit: str, curves: list[CurveSpec] | None = None,
                 y_range: tuple[float, float] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": pg.DateAxisItem(utcOffset=None)})
        self.setTitle(title)
        self.setLabel("left", units=unit)
        self.showGrid(x=True, y=True, alpha=0.2)
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        if y_range is not None:
            self.setYRange(*y_range, padding=0.02)
        self.getPlotItem().setClipToView(True)
        self.getPlotItem().setDownsampling(auto=True, mode="peak")
        self.addLegend(offset=(8, 8))
        self._curves: dict[SeriesKey, tuple[pg.PlotDataItem, int]] = {}
        for i, spec in enumerate(curves or []):
            self.add_curve(spec, i)

    def add_curve(self, spec: CurveSpec, index: int | None = None) -> None:
        if spec.key in self._curves:
            return
        colour = spec.colour or colour_for(spec.key[0], len(self._curves) if index is None else index)
        item = self.plot([], [], name=spec.label, pen=pg.mkPen(colour, width=2))
        self._curves[spec.key] = (item, -1)

    def curve(self, key: SeriesKey) -> pg.PlotDataItem:
        return self._curves[key][0]

    def refresh(self, buffers: LiveBuffers, now: float, window_s: float) -> bool:
        """Redraw curves whose series changed; keep the time axis scrolling. Returns whether
        any curve got new data."""
        changed = False
        for key, (item, seen) in self._curves.items():
            version = buffers.version(key)
            if version == seen:
                continue
            ts, values = buffers.window(key, since=now - window_s)
            item.setData(ts, values)
            self._curves[key] = (item, version)
            changed = True
        self.setXRange(now - window_s, now, padding=0)
        return changed
