"""A live time-series chart: a title, one pyqtgraph plot whose curves follow series in the live
buffers (or, for long ranges, the database), and a legend table under the plot with each
series' last / min / max / mean. Curves are created once per series and updated with
``setData``; a chart with nothing to show says why instead of drawing an empty grid.

A chart shows either fixed series (:class:`CurveSpec`) or every series of a metric
(:class:`MetricSpec`, e.g. one curve per GPU or per model, added as they appear).

What is drawn may be smoothed (a moving average, when the window's :class:`TimeWindow` asks
for it); the legend's figures and everything stored stay the recorded values.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette, QResizeEvent, QTransform
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.records import SeriesKey
from app.storage.history import HistorySource
from app.units import BINARY_UNITS, format_value
from widgets.chart_legend import ChartLegend, LegendRow, rows_that_fit, stats_text
from widgets.theme import MUTED, colour_for_key
from widgets.time_window import TimeWindow

FILL_ALPHA = 48
"""Opacity (of 255) of the area under a curve: enough to read a busy series as a shape, little
enough that overlapping series stay visible through each other."""
UNIT_SHOWN_BY_TICKS = {"B", "s"}  # their tick labels carry the unit (GiB, ms): no unit in the title
UNSHADED_UNITS = {"s", "°C"}
"""Units whose values are levels, not amounts: a latency's percentiles or a temperature have no
"area under" worth shading (and overlapping percentile areas would hide each other)."""


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
    fill: bool = True


@dataclass(frozen=True)
class MetricSpec:
    """Every series of metric ``name`` whose labels include ``match``; the legend is ``legend``
    formatted with the series' labels (e.g. ``"GPU {gpu}"``; ``{server}`` is the server's display
    name), ``scale`` multiplies values (e.g. 100 to show a 0–1 ratio as %). ``fill=False`` draws a
    line with no shaded area, for a capacity or a limit (total slots, power limit) that would
    shade the whole chart."""

    name: str
    legend: str = "{name}"
    match: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0
    fill: bool = True

    def label_for(self, key: SeriesKey, names: Callable[[str], str] = str) -> str:
        labels = {k: names(v) if k == "server" else v for k, v in key[1]}
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


class SecondsAxis(pg.AxisItem):
    """A value axis for durations whose ticks say their unit: "350 ms" below a second, "1.5 s"
    above (the chart title then needs no unit, and the axis no rotated label beside it)."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        if not values:
            return []
        ms = max(abs(v) for v in values) < 1
        unit, name = (1e-3, "ms") if ms else (1.0, "s")
        decimals = max(0, -int(math.floor(math.log10(spacing / unit)))) if spacing > 0 else 0
        return [f"{v / unit:.{min(decimals, 3)}f} {name}" for v in values]


def _value_axis(unit: str) -> pg.AxisItem:
    if unit == "B":
        return BinaryBytesAxis("left")
    if unit == "s":
        return SecondsAxis("left")
    return pg.AxisItem("left")


class AreaFill(pg.GraphicsObject):
    """The translucent shaded area under a curve, from zero up to the line (and up to the peak
    of the points inside each pixel column, so the shading meets the line's spikes), with no
    shading across a gap in the data.

    Drawn as one small image per redraw, computed with numpy: Qt's software rasteriser is slow
    at polygons with hundreds of edges and at translucent fills (pyqtgraph's own ``fillLevel``
    fills in chunks of 50 points, 72 ``fillPath`` calls per curve for an hour of 1 Hz data,
    ~5x the cost of the whole chart), while drawing one image is among its fastest operations
    (bench/render.py).
    """

    def __init__(self, colour: str) -> None:
        super().__init__()
        c = QColor(colour)
        a = FILL_ALPHA
        # premultiplied ARGB, the format Qt blends fastest
        self._pixel = np.uint32((a << 24) | (c.red() * a // 255 << 16) | (c.green() * a // 255 << 8)
                                | (c.blue() * a // 255))
        self._x = self._y = np.empty(0)
        self._bounds = QRectF()
        # the last image, where it goes, and for which view (transform and clip)
        self._cache: tuple[tuple[Any, ...], QImage | None, QPointF] | None = None

    def set_data(self, xs: np.ndarray, ys: np.ndarray) -> None:
        self.prepareGeometryChange()
        self._x, self._y = xs, ys
        self._cache = None
        finite = ys[np.isfinite(ys)] if len(ys) else ys
        if len(finite) > 1:
            low, high = min(0.0, float(finite.min())), max(0.0, float(finite.max()))
            self._bounds = QRectF(float(xs[0]), low, float(xs[-1] - xs[0]), high - low)
        else:
            self._bounds = QRectF()
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt naming)
        return self._bounds

    def paint(self, painter: QPainter, *_args: Any) -> None:
        t = painter.transform()
        clip = t.mapRect(painter.clipBoundingRect()) if painter.hasClipping() else None
        key = (t.m11(), t.m22(), t.dx(), t.dy(), clip.getRect() if clip is not None else None)
        if self._cache is None or self._cache[0] != key:  # a view repaints more often than data moves
            self._cache = (key, *self._image(t, clip))
        _, image, at = self._cache
        if image is not None:
            painter.resetTransform()
            painter.drawImage(at, image)

    def _image(self, transform: QTransform, clip: QRectF | None) -> tuple[QImage | None, QPointF]:
        found = area_columns(self._x, self._y, transform, clip)
        if found is None:
            return None, QPointF()
        left, tops, base = found
        top = int(max(0, np.floor(np.nanmin(tops))))
        height = int(base) - top
        if height <= 0:
            return None, QPointF()
        rows = np.arange(top, top + height, dtype=np.float64)[:, None] + 0.5
        pixels = np.where(rows >= tops[None, :], self._pixel, np.uint32(0))
        image = QImage(pixels.data, pixels.shape[1], height, 4 * pixels.shape[1],
                       QImage.Format.Format_ARGB32_Premultiplied).copy()  # own its pixels
        return image, QPointF(left, top)


def area_columns(x: np.ndarray, y: np.ndarray, transform: QTransform, clip: QRectF | None
                 ) -> tuple[int, np.ndarray, float] | None:
    """Where the area under a curve reaches in each device pixel column: ``(first column,
    top y of each column (NaN: nothing to shade), baseline y)``, or None if nothing shows.
    ``transform`` maps data to device pixels (pyqtgraph views only scale and translate)."""
    if len(x) < 2:
        return None
    px = x * transform.m11() + transform.dx()
    py = y * transform.m22() + transform.dy()
    base = transform.dy()  # the value 0
    finite = np.isfinite(py)
    if finite.sum() < 2:
        return None
    run = np.cumsum(~finite)[finite]  # which unbroken run of data each finite point is in
    px, py = px[finite], py[finite]
    first, last = int(np.floor(px[0])), int(np.ceil(px[-1]))
    if clip is not None:
        first, last = max(first, int(np.floor(clip.left()))), min(last, int(np.ceil(clip.right())))
        base = min(base, clip.bottom())
    if last <= first:
        return None
    centres = np.arange(first, last) + 0.5
    tops = np.interp(centres, px, py)  # the line itself
    after = np.searchsorted(px, centres)
    inside = (after > 0) & (after < len(px))
    bridged = np.zeros(len(centres), dtype=bool)
    bridged[inside] = run[after[inside] - 1] != run[after[inside]]
    tops[~inside | bridged] = np.nan  # beyond the data, or across a gap: no shading
    # a spike narrower than a column: shade up to it (px is sorted, so each column's points
    # are one slice)
    cols = np.floor(px).astype(np.int64) - first
    seen = (cols >= 0) & (cols < len(tops))
    cols, peaks = cols[seen], py[seen]
    if len(cols):
        starts = np.concatenate(([0], np.flatnonzero(np.diff(cols)) + 1))
        at = cols[starts]
        tops[at] = np.fmin(tops[at], np.minimum.reduceat(peaks, starts))
    if clip is not None:
        tops = np.maximum(tops, clip.top())
    if np.all(np.isnan(tops)):
        return None
    return first, tops, base


@dataclass
class _Curve:
    item: pg.PlotDataItem
    fill: AreaFill | None
    label: str
    colour: str
    scale: float
    server: str | None = None
    version: int = -1
    hidden: bool = False
    row: LegendRow | None = None


class TimeSeriesPlot(QFrame):
    """A chart card: title, plot with a time axis and a hover read-out, legend table below.

    Args:
        title: shown above the chart, with the unit beside it.
        unit: the values' unit. ``"B"`` gives binary prefixes (GiB) and ``"s"`` ms/s on the
            axis ticks; other units are written beside the title.
        curves: fixed series, or metric patterns whose series are added as they appear.
        y_range: fixed value range, e.g. ``(0, 100)`` for percentages; ``None`` autoscales.
        empty_text: what the chart says while it has no data.
    """

    follows_session = True
    """Whether a young recording session narrows the range (False: another machine's chart)."""

    def __init__(self, title: str, unit: str, curves: Sequence[CurveSpec | MetricSpec] | None = None,
                 y_range: tuple[float, float] | None = None, parent: QWidget | None = None,
                 empty_text: str = "No data yet") -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setBackgroundRole(QPalette.ColorRole.Base)
        self.setAutoFillBackground(True)
        self.unit = unit
        self.title = QLabel(title)
        bold = QFont(self.title.font())
        bold.setBold(True)
        self.title.setFont(bold)
        self.unit_label = QLabel("" if unit in UNIT_SHOWN_BY_TICKS else unit)
        self.unit_label.setStyleSheet(MUTED)
        head = QHBoxLayout()
        head.setContentsMargins(6, 2, 6, 0)
        head.setSpacing(8)
        head.addWidget(self.title)
        head.addWidget(self.unit_label)
        head.addStretch(1)

        self.plot_widget = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(utcOffset=None),
                                                    "left": _value_axis(unit)})
        self.plot_widget.setFrameShape(QFrame.Shape.NoFrame)
        self.plot_widget.setMinimumHeight(60)
        item = self.plot_widget.getPlotItem()
        item.layout.setContentsMargins(0, 8, 6, 0)  # room for the top tick label
        # No grid: alpha-blended grid lines cost ~4x the curves themselves in Qt's raster
        # engine (bench/render.py), and the axes' ticks carry the same information.
        self.plot_widget.setMouseEnabled(x=False, y=False)
        self.plot_widget.setMenuEnabled(False)
        self.plot_widget.hideButtons()
        self.y_range = y_range
        self._y_top: float | None = None
        if y_range is not None:
            self.plot_widget.setYRange(*y_range, padding=0.02)
        item.vb.disableAutoRange(axis="y")
        tick_font = QFont(self.font())
        tick_font.setPointSizeF(max(7.0, tick_font.pointSizeF() * 0.85))
        for axis in ("left", "bottom"):  # small ticks: more of them fit a small chart
            item.getAxis(axis).setStyle(tickFont=tick_font, tickTextOffset=3)
        # No pyqtgraph downsampling or clip-to-view: a curve never holds more than the ring
        # buffer (4096 points) or ~2 points per pixel from the database, and at that size
        # pyqtgraph's peak downsampling costs more per redraw than it saves (bench/render.py).
        self.legend = ChartLegend()
        self.legend.toggled.connect(self._toggle)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 3)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.plot_widget, 1)
        layout.addWidget(self.legend)

        self.specs = list(curves or [])
        self.server_names: Callable[[str], str] = str  # a server's display name (the window sets it)
        self.view: TimeWindow | None = None
        self.history: HistorySource | None = None
        self._curves: dict[SeriesKey, _Curve] = {}
        self._range: tuple[float, float] | None = None
        self._smooth = 0
        self.empty_text = empty_text
        # A plain label over the plot and legend: it wraps long explanations, which a scene item can't.
        self._empty = QLabel(empty_text, self)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)
        self._empty.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._empty.setAutoFillBackground(True)
        self._empty.setBackgroundRole(QPalette.ColorRole.Base)
        self._empty.setStyleSheet(f"{MUTED} padding: 12px;")
        self._crosshair = pg.InfiniteLine(angle=90, movable=False,
                                          pen=pg.mkPen((128, 128, 128), style=Qt.PenStyle.DashLine))
        self._readout = pg.TextItem(anchor=(0, 0), fill=pg.mkBrush(0, 0, 0, 170), color="w")
        for it in (self._crosshair, self._readout):
            it.setVisible(False)
            it.setZValue(20)
            self.plot_widget.addItem(it, ignoreBounds=True)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse)
        for spec in self.specs:
            if isinstance(spec, CurveSpec):
                self._add(spec.key, spec.label, spec.colour, 1.0, spec.fill)
        for axis in ("left", "bottom"):  # starts empty: the message shows, the axes don't
            item.showAxis(axis, False)

    # ------------------------------------------------------------------ pyqtgraph access
    def getPlotItem(self) -> pg.PlotItem:  # noqa: N802 (pyqtgraph naming)
        return self.plot_widget.getPlotItem()

    @property
    def view_box(self) -> pg.ViewBox:
        return self.plot_widget.getPlotItem().vb

    # ------------------------------------------------------------------ curves
    def _add(self, key: SeriesKey, label: str, colour: str, scale: float, shaded: bool = True) -> pg.PlotDataItem:
        # 1 px cosmetic pens take Qt's fast line path; 2 px lines cost +50 % per redraw.
        colour = colour or colour_for_key(key)
        item = self.plot_widget.plot([], [], name=label, pen=pg.mkPen(colour, width=1), connect="finite",
                                     symbolSize=6, symbolPen=None, symbolBrush=colour)
        fill = AreaFill(colour) if shaded and self.unit not in UNSHADED_UNITS else None
        if fill is not None:
            fill.setZValue(item.zValue() - 1)
            self.plot_widget.addItem(fill, ignoreBounds=True)
        server = dict(key[1]).get("server")
        self._curves[key] = _Curve(item, fill, label, colour, scale, server and self.server_names(server))
        return item

    def curve(self, key: SeriesKey) -> pg.PlotDataItem:
        return self._curves[key].item

    def curve_keys(self) -> list[SeriesKey]:
        return list(self._curves)

    def _discover(self, buffers: ChartSource, t0: float) -> None:
        for spec in self.specs:
            if not isinstance(spec, MetricSpec):
                continue
            keys = self.history.keys(spec.name, t0) if self.history else buffers.keys(spec.name)
            for key in keys:
                if key not in self._curves and spec.matches(key):
                    self._add(key, spec.label_for(key, self.server_names), "", spec.scale, spec.fill)

    def _toggle(self, key: object) -> None:
        """Hide or show one series (a click on its legend row)."""
        curve = self._curves.get(key)  # type: ignore[call-overload]
        if curve is None:
            return
        curve.hidden = not curve.hidden
        curve.item.setVisible(not curve.hidden)
        if curve.fill is not None:
            curve.fill.setVisible(not curve.hidden)
        if curve.row is not None:
            curve.row = replace(curve.row, hidden=curve.hidden)
        self._update_legend()
        if self.y_range is None:
            self._fit_y()

    # ------------------------------------------------------------------ redraw
    def refresh(self, buffers: ChartSource, now: float, window_s: float | None = None) -> bool:
        """Redraw for the time ``now``. The range comes from the attached :class:`TimeWindow`
        (or the last ``window_s`` seconds without one). Returns whether any curve changed."""
        if self.view is not None:
            t0, t1 = self.view.range(now, from_session=self.follows_session)
            smooth = self.view.smooth_points
        else:
            t0, t1 = now - (window_s or 300.0), now
            smooth = 0
        if smooth != self._smooth:
            self._smooth = smooth
            self.force_redraw()
        self._discover(buffers, t0)
        range_moved = self._range != (t0, t1)
        changed = False
        pixels = max(int(self.view_box.width()), 100)
        has_data = False
        fmt = self.legend_format
        for key, curve in list(self._curves.items()):
            item = curve.item
            version = buffers.version(key)
            if version == curve.version:
                has_data = has_data or item.xData is not None and len(item.xData) > 0
                continue
            if self.history is not None:
                ts, values = self.history.points(key, t0, t1, pixels)
            else:
                ts, values = buffers.window(key, since=t0)
            if curve.scale != 1.0:
                values = values * curve.scale
            # A line needs two points: show a series that has only just started as dots.
            sparse = len(ts) < 3
            if sparse != (item.opts["symbol"] is not None):  # only on change: symbols are costly
                item.setSymbol("o" if sparse else None)
            xs, ys = break_gaps(ts, values)
            ys = moving_average(ys, smooth) if smooth > 1 else ys
            item.setData(xs, ys)
            if curve.fill is not None:
                curve.fill.set_data(xs, ys)
            curve.version = version
            curve.row = LegendRow(key, curve.label, curve.colour, *stats_text(values, fmt), hidden=curve.hidden)
            changed = True
            has_data = has_data or len(ts) > 0
        # An empty chart shows its message over hidden axes: scrolling them would repaint the
        # chart every tick for nothing (measurable in the idle window's CPU, bench/idle.py).
        if range_moved and has_data:
            self.plot_widget.setXRange(t0, t1, padding=0)
            self._range = (t0, t1)
        if changed:
            self._update_legend()
            if self.y_range is None:
                self._fit_y()
        self._show_empty(not has_data)
        return changed

    def _update_legend(self) -> None:
        shown = [(c.server, c.row) for c in self._curves.values()
                 if c.row is not None and c.item.xData is not None and len(c.item.xData)]
        # One server (the usual case): name it once above the rows, not in every row.
        servers = {server for server, _row in shown}
        server = servers.pop() if len(servers) == 1 else None
        if server:
            rows = [replace(row, label=row.label.removeprefix(server).strip() or row.label) for _s, row in shown]
        else:
            rows = [row for _s, row in shown]
        self.legend.set_rows(rows, server or "")

    def format(self, value: float) -> str:
        return format_value(value, self.unit)

    def legend_format(self, value: float) -> str:
        """A legend figure: with its unit where the axis writes it too (GiB, ms, %), a bare
        number where the unit stands beside the title (tokens/s)."""
        return format_value(value, self.unit if self.unit in UNIT_SHOWN_BY_TICKS | {"%"} else "")

    def _fit_y(self) -> None:
        """Scale the value axis from zero to a bit above the highest visible value. Everything
        llmmon charts is >= 0; a zero baseline keeps a flat line from being blown up into
        noise (pyqtgraph's auto-range would show "0 ± 1e-9")."""
        top = 0.0
        for curve in self._curves.values():
            y = curve.item.yData
            if not curve.hidden and y is not None and len(y) and not np.all(np.isnan(y)):
                top = max(top, float(np.nanmax(y)))
        wanted = top * 1.1 if top > 0 else 1.0
        if wanted != self._y_top:  # an unchanged range must not re-layout the axes
            self._y_top = wanted
            self.plot_widget.setYRange(0.0, wanted, padding=0)

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
            # the legend takes at most about a third of the chart; the rest is the plot
            self.legend.set_max_rows(rows_that_fit(self.height(), self.legend._line) - 1)

    def _place_empty(self) -> None:
        # Cover everything below the title so an empty chart reads as a message, not as axes.
        top = self.title.geometry().bottom() + 2
        self._empty.setGeometry(1, top, self.width() - 2, max(self.height() - top - 1, 0))

    def force_redraw(self) -> None:
        """Forget what was drawn so the next refresh fetches every curve again."""
        for curve in self._curves.values():
            curve.version = -1
        self._range = None

    def forget_discovered(self) -> None:
        """Drop the curves found through :class:`MetricSpec` (legend entries too) and redraw the
        rest: the chart shows another set of series now (another machine, in the Fleet tab)."""
        fixed = {spec.key for spec in self.specs if isinstance(spec, CurveSpec)}
        for key in [k for k in self._curves if k not in fixed]:
            curve = self._curves.pop(key)
            self.plot_widget.removeItem(curve.item)
            if curve.fill is not None:
                self.plot_widget.removeItem(curve.fill)
        self._y_top = None
        self._update_legend()
        self.force_redraw()

    # ------------------------------------------------------------------ hover read-out
    def _on_mouse(self, pos: QPointF) -> None:
        vb = self.view_box
        if not vb.sceneBoundingRect().contains(pos):
            self._crosshair.setVisible(False)
            self._readout.setVisible(False)
            return
        x = vb.mapSceneToView(pos).x()
        lines = [time.strftime("%H:%M:%S", time.localtime(x))]
        for curve in self._curves.values():
            xs, ys = curve.item.xData, curve.item.yData
            if curve.hidden or xs is None or len(xs) == 0:
                continue
            i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
            lines.append(f"{curve.label}: {self.format(float(ys[i]))}")
        self._crosshair.setPos(x)
        self._readout.setText("\n".join(lines))
        (x0, x1), (_, y1) = vb.viewRange()
        # keep the read-out inside the plot: to the left of the line in the right half
        self._readout.setAnchor((1, 0) if x > (x0 + x1) / 2 else (0, 0))
        self._readout.setPos(x, y1)
        self._crosshair.setVisible(True)
        self._readout.setVisible(len(lines) > 1)


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


def moving_average(values: np.ndarray, n: int) -> np.ndarray:
    """A centred moving average over ``n`` points, for drawing. It never reaches across a NaN
    (a hole in the data stays a hole, and the points beside it average only their own side);
    at the ends of a run it averages the points there are, so the live edge is not pulled
    down. Returns a new array; ``values`` is left as it is."""
    count = len(values)
    if n <= 1 or count < 2:
        return values
    index = np.arange(count)
    finite = np.isfinite(values)
    # the run of finite values each point belongs to: [start, end]
    start = np.maximum.accumulate(np.where(~finite, index, -1)) + 1
    end = np.minimum.accumulate(np.where(~finite, index, count)[::-1])[::-1] - 1
    before, after = (n - 1) // 2, n // 2
    lo = np.maximum(index - before, start)
    hi = np.minimum(index + after, end)
    sums = np.concatenate(([0.0], np.cumsum(np.where(finite, values, 0.0))))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = (sums[hi + 1] - sums[lo]) / (hi - lo + 1)
    out[~finite] = np.nan
    return out
