"""A live time-series chart: one pyqtgraph plot whose curves follow series in the live buffers
(or, for long ranges, the database). Curves are created once per series and updated with
``setData``; a chart with nothing to show says why instead of drawing an empty grid.

A chart shows either fixed series (:class:`CurveSpec`) or every series of a metric
(:class:`MetricSpec`, e.g. one curve per GPU or per model, added as they appear).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QWidget

from app.records import SeriesKey
from app.storage.history import HistorySource
from widgets.theme import colour_for_key
from widgets.time_window import TimeWindow

BINARY_UNITS = [(2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B")]


class ChartSource(Protocol):
    """Where a chart reads its series: the live buffers (:class:`~app.buffers.LiveBuffers`), or
    another machine's series read from Prometheus (:class:`~app.fleet.model.SeriesSet`)."""

    def keys(self, name: str | None = None) -> list[SeriesKey]: ...

    def version(self, key: SeriesKey) -> int: ...

    def window(self, key: SeriesKey, since: float | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class CurveSpec:
    """One fixed series and its legend text."""

    key: SeriesKey
    label: str
    colour: str = ""


@dataclass(frozen=True)
class MetricSpec:
    """Every series of metric ``name`` whose labels include ``match``; the legend is ``legend``
    formatted with the series' labels (e.g. ``"GPU {gpu}"``), ``scale`` multiplies values
    (e.g. 100 to show a 0–1 ratio as %)."""

    name: str
    legend: str = "{name}"
    match: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0

    def label_for(self, key: SeriesKey) -> str:
        labels = dict(key[1])
        try:
            return self.legend.format(name=key[0], **labels)
        except (KeyError, IndexError):
            return key[0] + "".join(f" {v}" for v in labels.values())

    def matches(self, key: SeriesKey) -> bool:
        labels = dict(key[1])
        return key[0] == self.name and all(labels.get(k) == v for k, v in self.match)


class BinaryBytesAxis(pg.AxisItem):
    """A value axis for bytes with binary prefixes (GiB, not GB) and ticks on round numbers of
    the chosen unit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enableAutoSIPrefix(False)

    def _unit(self, span: float) -> tuple[float, str]:
        return next((u for u in BINARY_UNITS if span >= u[0]), BINARY_UNITS[-1])

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:  # noqa: N802
        scale, _ = self._unit(max(abs(minVal), abs(maxVal)))
        return [(s * scale, o * scale) for s, o in super().tickSpacing(minVal / scale, maxVal / scale, size)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        if not values:
            return []
        unit, name = self._unit(max(abs(v) for v in values))
        decimals = max(0, -int(math.floor(math.log10(spacing / unit)))) if spacing > 0 else 0
        return [f"{v / unit:.{min(decimals, 3)}f} {name}" for v in values]


class TimeSeriesPlot(pg.PlotWidget):
    """A chart with a time axis, a unit on the value axis, a legend and a hover crosshair.

    Args:
        title: shown above the chart.
        unit: the value axis unit. ``"B"`` gives binary prefixes (GiB); other units get SI
            prefixes from pyqtgraph (``"s"`` shows small values as ms).
        curves: fixed series, or metric patterns whose series are added as they appear.
        y_range: fixed value range, e.g. ``(0, 100)`` for percentages; ``None`` autoscales.
        empty_text: what the chart says while it has no data.
    """

    def __init__(self, title: str, unit: str, curves: Sequence[CurveSpec | MetricSpec] | None = None,
                 y_range: tuple[float, float] | None = None, parent: QWidget | None = None,
                 empty_text: str = "No data yet") -> None:
        axes = {"bottom": pg.DateAxisItem(utcOffset=None)}
        if unit == "B":
            axes["left"] = BinaryBytesAxis("left")
        super().__init__(parent=parent, axisItems=axes)
        self.setTitle(title)
        self.setLabel("left", units=None if unit == "B" else unit)
        # No grid: alpha-blended grid lines cost ~4x the curves themselves in Qt's raster
        # engine (bench/render.py), and the axes' ticks carry the same information.
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        self.y_range = y_range
        self._y_top: float | None = None
        if y_range is not None:
            self.setYRange(*y_range, padding=0.02)
        self.getPlotItem().vb.disableAutoRange(axis="y")
        item = self.getPlotItem()
        # No pyqtgraph downsampling or clip-to-view: a curve never holds more than the ring
        # buffer (4096 points) or ~2 points per pixel from the database, and at that size
        # pyqtgraph's peak downsampling costs more per redraw than it saves (bench/render.py).
        self.legend = self.addLegend(offset=(8, 8))
        self.specs = list(curves or [])
        self.view: TimeWindow | None = None
        self.history: HistorySource | None = None
        self._curves: dict[SeriesKey, tuple[pg.PlotDataItem, float, int]] = {}
        self._range: tuple[float, float] | None = None
        self.empty_text = empty_text
        # A plain label over the chart: it wraps long explanations, which a scene item can't.
        self._empty = QLabel(empty_text, self)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)
        self._empty.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._empty.setStyleSheet("color: palette(mid); background: palette(base); padding: 12px;")
        dashed = pg.mkPen((128, 128, 128), style=Qt.PenStyle.DashLine)
        self._crosshair = pg.InfiniteLine(angle=90, movable=False, pen=dashed)
        self._readout = pg.TextItem(anchor=(0, 0), fill=pg.mkBrush(0, 0, 0, 150), color="w")
        for it in (self._crosshair, self._readout):
            it.setVisible(False)
            it.setZValue(20)
            self.addItem(it, ignoreBounds=True)
        self.scene().sigMouseMoved.connect(self._on_mouse)
        for spec in self.specs:
            if isinstance(spec, CurveSpec):
                self._add(spec.key, spec.label, spec.colour, 1.0)
        for axis in ("left", "bottom"):  # starts empty: the message shows, the axes don't
            item.showAxis(axis, False)

    # ------------------------------------------------------------------ curves
    def _add(self, key: SeriesKey, label: str, colour: str, scale: float) -> pg.PlotDataItem:
        # 1 px cosmetic pens take Qt's fast line path; 2 px lines cost +50 % per redraw.
        colour = colour or colour_for_key(key)
        item = self.plot([], [], name=label, pen=pg.mkPen(colour, width=1), connect="finite",
                         symbolSize=6, symbolPen=None, symbolBrush=colour)
        self._curves[key] = (item, scale, -1)
        return item

    def curve(self, key: SeriesKey) -> pg.PlotDataItem:
        return self._curves[key][0]

    def curve_keys(self) -> list[SeriesKey]:
        return list(self._curves)

    def _discover(self, buffers: ChartSource, t0: float) -> None:
        for spec in self.specs:
            if not isinstance(spec, MetricSpec):
                continue
            keys = self.history.keys(spec.name, t0) if self.history else buffers.keys(spec.name)
            for key in keys:
                if key not in self._curves and spec.matches(key):
                    self._add(key, spec.label_for(key), "", spec.scale)

    # ------------------------------------------------------------------ redraw
    def refresh(self, buffers: ChartSource, now: float, window_s: float | None = None) -> bool:
        """Redraw for the time ``now``. The range comes from the attached :class:`TimeWindow`
        (or the last ``window_s`` seconds without one). Returns whether any curve changed."""
        if self.view is not None:
            t0, t1 = self.view.range(now)
        else:
            t0, t1 = now - (window_s or 300.0), now
        self._discover(buffers, t0)
        range_moved = self._range != (t0, t1)
        changed = False
        pixels = max(int(self.getPlotItem().vb.width()), 100)
        has_data = False
        for key, (item, scale, seen) in list(self._curves.items()):
            version = buffers.version(key)
            if version == seen:
                has_data = has_data or item.xData is not None and len(item.xData) > 0
                continue
            if self.history is not None:
                ts, values = self.history.points(key, t0, t1, pixels)
            else:
                ts, values = buffers.window(key, since=t0)
            if scale != 1.0:
                values = values * scale
            # A line needs two points: show a series that has only just started as dots.
            sparse = len(ts) < 3
            if sparse != (item.opts["symbol"] is not None):  # only on change: symbols are costly
                item.setSymbol("o" if sparse else None)
            item.setData(*break_gaps(ts, values))
            self._curves[key] = (item, scale, version)
            changed = True
            has_data = has_data or len(ts) > 0
        if range_moved:
            self.setXRange(t0, t1, padding=0)
            self._range = (t0, t1)
        if changed and self.y_range is None:
            self._fit_y()
        self._show_empty(not has_data)
        return changed

    def _fit_y(self) -> None:
        """Scale the value axis from zero to a bit above the highest visible value. Everything
        llmmon charts is >= 0; a zero baseline keeps a flat line from being blown up into
        noise (pyqtgraph's auto-range would show "0 ± 1e-9")."""
        top = 0.0
        for item, _scale, _v in self._curves.values():
            if item.yData is not None and len(item.yData):
                peak = np.nanmax(item.yData) if not np.all(np.isnan(item.yData)) else 0.0
                top = max(top, float(peak))
        wanted = top * 1.1 if top > 0 else 1.0
        if wanted != self._y_top:  # an unchanged range must not re-layout the axes
            self._y_top = wanted
            self.setYRange(0.0, wanted, padding=0)

    def attach(self, view: TimeWindow, history: HistorySource) -> None:
        """Follow the window's time range and read long ranges from the database."""
        self.view = view
        self.history = history
        view.changed.connect(self.force_redraw)

    def set_empty_text(self, text: str) -> None:
        if text != self.empty_text:
            self.empty_text = text
            self._empty.setText(text)

    @property
    def showing_empty_text(self) -> bool:
        return not self._empty.isHidden()

    def _show_empty(self, empty: bool) -> None:
        if empty == self.showing_empty_text:
            return
        self._empty.setVisible(empty)
        item = self.getPlotItem()
        for axis in ("left", "bottom"):  # an empty chart shows its message, not bare axes
            item.showAxis(axis, not empty)
        if empty:
            self._place_empty()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        if "_empty" in self.__dict__:  # Qt resizes during __init__, before the label exists
            self._place_empty()

    def _place_empty(self) -> None:
        # Cover everything below the title so an empty chart reads as a message, not as axes.
        top = int(self.getPlotItem().titleLabel.boundingRect().height()) + 2
        self._empty.setGeometry(0, top, self.width(), max(self.height() - top, 0))


    def force_redraw(self) -> None:
        """Forget what was drawn so the next refresh fetches every curve again."""
        self._curves = {k: (item, scale, -1) for k, (item, scale, _) in self._curves.items()}
        self._range = None

    def forget_discovered(self) -> None:
        """Drop the curves found through :class:`MetricSpec` (legend entries too) and redraw the
        rest: the chart shows another set of series now (another machine, in the Fleet tab)."""
        fixed = {spec.key for spec in self.specs if isinstance(spec, CurveSpec)}
        for key in [k for k in self._curves if k not in fixed]:
            self.removeItem(self._curves.pop(key)[0])
        self._y_top = None
        self.force_redraw()

    # ------------------------------------------------------------------ crosshair
    def _on_mouse(self, pos: QPointF) -> None:
        vb = self.getPlotItem().vb
        if not self.sceneBoundingRect().contains(pos) or not vb.sceneBoundingRect().contains(pos):
            self._crosshair.setVisible(False)
            self._readout.setVisible(False)
            return
        x = vb.mapSceneToView(pos).x()
        lines = [time.strftime("%H:%M:%S", time.localtime(x))]
        for item, _scale, _v in self._curves.values():
            xs, ys = item.xData, item.yData
            if xs is None or len(xs) == 0:
                continue
            i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
            lines.append(f"{item.name()}: {format_value(float(ys[i]), self._unit())}")
        self._crosshair.setPos(x)
        self._readout.setText("\n".join(lines))
        (_, _), (y0, y1) = vb.viewRange()
        self._readout.setPos(x, y1)
        self._crosshair.setVisible(True)
        self._readout.setVisible(len(lines) > 1)

    def _unit(self) -> str:
        axis = self.getPlotItem().getAxis("left")
        return "B" if isinstance(axis, BinaryBytesAxis) else (axis.labelUnits or "")


def break_gaps(ts: np.ndarray, values: np.ndarray, min_gap_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN point where the series has a hole (the app was not running, a source was
    down) so the line breaks there instead of drawing a straight bridge across missing data."""
    if len(ts) < 3:
        return ts, values
    steps = np.diff(ts)
    limit = max(min_gap_s, 5 * float(np.median(steps)))
    holes = np.nonzero(steps > limit)[0]
    if not len(holes):
        return ts, values
    at = holes + 1
    return np.insert(ts, at, ts[holes] + steps[holes] / 2), np.insert(values, at, np.nan)


def format_value(value: float, unit: str) -> str:
    """A human-readable value with its unit: binary prefixes for bytes, ms for small seconds."""
    if unit == "B":
        scale, name = next((u for u in BINARY_UNITS if abs(value) >= u[0]), BINARY_UNITS[-1])
        return f"{value / scale:.2f} {name}" if scale > 1 else f"{value:.0f} B"
    if unit == "s" and abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.3g} {unit}".strip()
