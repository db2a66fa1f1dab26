"""A chart's legend as a table under the plot (after Grafana's table legend): one row per series
with its colour, its name and the last / min / max / mean of the data in the chart's range.

It is painted by hand in one widget rather than built from a grid of labels: a chart redraws
every second, and one ``update()`` of one widget costs far less than re-laying out a grid of
labels whose texts changed. Narrow charts keep only the name and the last value (the other
figures are in each row's tooltip); short charts show as many rows as fit in about a third of
the chart and say how many more there are. Clicking a row hides or shows that series.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QHelpEvent, QMouseEvent, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

WIDE_PX = 380          # narrower than this, only the name and the last value are shown
SWATCH_PX = 10
STATS = ("last", "min", "max", "mean")


@dataclass(frozen=True, slots=True)
class LegendRow:
    """One series in the legend: its name, colour and figures over the chart's range (NaN when
    the range holds no value), the figures already formatted with the chart's unit."""

    key: object
    label: str
    colour: str
    last: str = "—"
    min: str = "—"
    max: str = "—"
    mean: str = "—"
    hidden: bool = False

    def tooltip(self) -> str:
        return (f"{self.label}\nlast {self.last} · min {self.min} · max {self.max} · mean {self.mean}"
                "\n(over the range shown, from the recorded data)\nClick to hide or show this series")


def stats_text(values: np.ndarray, fmt: Callable[[float], str]) -> tuple[str, str, str, str]:
    """last, min, max and mean of ``values`` (NaN holes ignored), formatted; "—" when empty."""
    finite = values[np.isfinite(values)] if len(values) else values
    if not len(finite):
        return ("—",) * 4
    return fmt(float(finite[-1])), fmt(float(finite.min())), fmt(float(finite.max())), fmt(float(finite.mean()))


class ChartLegend(QWidget):
    """The legend table. ``toggled(key)`` is emitted when the user clicks a series' row."""

    toggled = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[LegendRow] = []
        self.heading = ""  # what every row shares (their server), said once on the header line
        self.max_rows = 6
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        self.setFont(font)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(False)
        self._line = QFontMetrics(font).height() + 2

    # ------------------------------------------------------------------ content
    def set_rows(self, rows: list[LegendRow], heading: str = "") -> None:
        """Show these rows under ``heading``; repaints (and re-lays out) only what changed."""
        if rows == self.rows and heading == self.heading:
            return
        grew = self._visible_count(len(rows)) != self._visible_count(len(self.rows))
        self.rows, self.heading = rows, heading
        if grew:
            self.updateGeometry()
        self.update()

    def set_max_rows(self, n: int) -> None:
        n = max(1, n)
        if n != self.max_rows:
            self.max_rows = n
            self.updateGeometry()
            self.update()

    @property
    def wide(self) -> bool:
        return self.width() >= WIDE_PX

    def _visible_count(self, n: int) -> int:
        """Series rows shown (the last line says "+N more" when they do not all fit)."""
        return n if n <= self.max_rows else self.max_rows - 1

    def _lines(self) -> int:
        n = len(self.rows)
        if not n:
            return 0
        return self._visible_count(n) + (n > self.max_rows) + 1  # + "+N more" + header

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        return QSize(200, self._lines() * self._line + (2 if self.rows else 0))

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(80, self.sizeHint().height())

    # ------------------------------------------------------------------ geometry
    def _columns(self) -> tuple[QRect, list[tuple[str, int, int]]]:
        """The name column's rectangle (per line) and (stat, x, width) of each figure column."""
        fm = QFontMetrics(self.font())
        figure_w = max(fm.horizontalAdvance("88,888.8 ms"), *(fm.horizontalAdvance(r.last) for r in self.rows)) + 8
        stats = STATS if self.wide else STATS[:1]
        right = self.width() - 4
        cols = []
        for stat in reversed(stats):
            cols.append((stat, right - figure_w, figure_w))
            right -= figure_w
        name = QRect(4 + SWATCH_PX + 6, 0, max(20, right - (4 + SWATCH_PX + 6) - 4), self._line)
        return name, list(reversed(cols))

    def row_at(self, y: int) -> int | None:
        """The index (into ``rows``) of the series drawn at height ``y``, if any."""
        line = y // self._line - 1
        if 0 <= line < self._visible_count(len(self.rows)):
            return line
        return None

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        if not self.rows:
            return
        painter = QPainter(self)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        muted = palette.color(QPalette.ColorRole.PlaceholderText)
        fm = painter.fontMetrics()
        name_rect, cols = self._columns()
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        painter.setPen(muted)
        for stat, x, w in cols:
            painter.drawText(QRect(x, 0, w, self._line), right, stat)
        if self.heading:
            r = QRect(4, 0, name_rect.right() - 4, self._line)
            painter.drawText(r, left, fm.elidedText(self.heading, Qt.TextElideMode.ElideRight, r.width()))
        shown = self._visible_count(len(self.rows))
        for i, row in enumerate(self.rows[:shown]):
            y = (i + 1) * self._line
            colour = QColor(row.colour)
            if row.hidden:
                colour.setAlpha(60)
            painter.fillRect(4, y + (self._line - SWATCH_PX) // 2, SWATCH_PX, SWATCH_PX, colour)
            painter.setPen(muted if row.hidden else text)
            r = name_rect.translated(0, y)
            painter.drawText(r, left, fm.elidedText(row.label, Qt.TextElideMode.ElideMiddle, r.width()))
            for stat, x, w in cols:
                painter.drawText(QRect(x, y, w, self._line), right, getattr(row, stat))
        if len(self.rows) > shown:
            painter.setPen(muted)
            painter.drawText(name_rect.translated(0, (shown + 1) * self._line), left,
                             f"+{len(self.rows) - shown} more (hover to list)")
        painter.end()

    # ------------------------------------------------------------------ interaction
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            index = self.row_at(event.pos().y())
            if index is not None:
                QToolTip.showText(event.globalPos(), self.rows[index].tooltip(), self)
            elif self.rows and event.pos().y() >= (self._visible_count(len(self.rows)) + 1) * self._line:
                hidden = self.rows[self._visible_count(len(self.rows)):]
                QToolTip.showText(event.globalPos(), "\n".join(f"{r.label}: {r.last}" for r in hidden), self)
            else:
                QToolTip.hideText()
            return True
        return super().event(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        index = self.row_at(int(event.position().y()))
        if index is not None and event.button() == Qt.MouseButton.LeftButton:
            self.toggled.emit(self.rows[index].key)
        super().mouseReleaseEvent(event)


def rows_that_fit(height: float, line: int, share: float = 0.35) -> int:
    """How many legend lines (header included) fit in ``share`` of a chart ``height`` px tall."""
    return max(2, math.floor(height * share / max(line, 1)))
