"""The Usage tab: "what did I run?". For a range (today, 7 / 30 days, everything, or custom) and
a grouping (hour, day, week): the totals on top, stacked bars per model (or server), and a
sortable table per server and model with where each figure came from. A second page,
*Trends*, shows each model's speed day by day (:mod:`widgets.trends_view`).

The figures come from :mod:`app.usage.report` on a worker thread (the database is read, never
written, here); the tab redraws when the range changes and once a minute while visible.
"""
from __future__ import annotations

import html
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import (
    QAbstractTableModel,
    QDateTime,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.durations import format_duration
from app.runtime import Runtime
from app.usage.energy import SOURCE_TEXT
from app.usage.periods import local_midnight, preset_range
from app.usage.report import SERVER, UsageCell, UsageReport, first_recorded, usage_report
from app.usage_cli import write_csv
from widgets.background import run_in_thread
from widgets.panel import Panel, note_label
from widgets.theme import MUTED, PALETTE
from widgets.trends_view import TrendsView

log = logging.getLogger(__name__)

REQUERY_S = 60.0
RANGES = [("Today", "today"), ("Last 7 days", "7d"), ("Last 30 days", "30d"), ("Everything", "all"),
          ("Custom…", "custom")]
GROUPS = [("by hour", "hour"), ("by day", "day"), ("by week", "week")]
PERIOD_S = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
MAX_SERIES = 6   # stacked bars: the biggest series (a palette colour each), the rest added up as "other"
OTHER = PALETTE[6]  # grey
EMPTY = ("No usage in this range.\n\nllmmon counts the requests it measures (the metering proxy, prompt "
         "tests and benchmarks) and the servers' own token counters: llama.cpp started with --metrics, "
         "and vLLM.")


def _busy(seconds: float) -> str:
    return format_duration(round(seconds)) if seconds >= 1 else ("0s" if seconds <= 0 else "<1s")


def compact(n: float) -> str:
    """``1234567 → "1.23 M"``, ``12345 → "12.3 k"``, ``999 → "999"``."""
    for scale, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _energy(cell: UsageCell) -> str:
    per = cell.joules_per_token
    return "" if per is None else f"{per:.3g} J" + (" ~" if cell.energy_shared else "")


def _energy_tip(cell: UsageCell) -> str:
    if cell.joules_per_token is None:
        return "No energy readings (NVIDIA GPU or CPU RAPL counters) while these requests ran"
    sources = ", ".join(SOURCE_TEXT.get(s, s) for s in sorted(cell.energy_sources) if s)
    shared = ("\nAn estimate: requests overlapped, each instant's energy was split equally among them"
              if cell.energy_shared else "")
    return (f"{cell.energy_j:,.0f} J over {cell.energy_tokens:,.0f} completion tokens, from {sources}; "
            f"the whole device's draw while the requests ran{shared}")


# (header, text, sort key, tooltip of a cell (or ""), column is numeric)
Column = tuple[str, Callable[[UsageCell], str], Callable[[UsageCell], Any], Callable[[UsageCell], str]]
COLUMNS: list[Column] = [
    ("Server", lambda c: c.server, lambda c: c.server, lambda c: c.server),  # shown by its display name
    ("Model", lambda c: c.model or "(unknown)", lambda c: c.model, lambda c: ""),
    ("Requests", lambda c: f"{c.requests:,.0f}", lambda c: c.requests, lambda c: c.source_text("requests")),
    ("Errors", lambda c: f"{c.errors:,}", lambda c: c.errors, lambda c: "Measured requests that failed"),
    ("Prompt tokens", lambda c: f"{c.prompt_tokens:,.0f}", lambda c: c.prompt_tokens,
     lambda c: c.source_text("prompt_tokens")),
    ("Completion tokens", lambda c: f"{c.completion_tokens:,.0f}" + ("*" if c.estimated_tokens else ""),
     lambda c: c.completion_tokens,
     lambda c: c.source_text("completion_tokens")
     + (f"\n* {c.estimated_tokens:,} counted from chunks (the server gave no count)" if c.estimated_tokens else "")),
    ("Busy", lambda c: _busy(c.busy_s), lambda c: c.busy_s, lambda c: c.source_text("busy_s")),
    ("Energy / token", _energy, lambda c: c.joules_per_token or -1.0, _energy_tip),
    ("Tokens from", lambda c: _origin(c), lambda c: _origin(c), lambda c: c.source_text("completion_tokens")),
]


def _origin(c: UsageCell) -> str:
    """Short: "server, 77 % measured" or "requests"; the tooltip says it in full."""
    sources = c.sources["completion_tokens"]
    if SERVER in sources and c.completion_tokens > 0:
        share = min(1.0, c.measured["completion_tokens"] / c.completion_tokens)
        return f"server, {share:.0%} measured" + (" (mixed)" if len(sources) > 1 else "")
    return "requests" if sources else ""


_ROOT = QModelIndex()


class UsageTableModel(QAbstractTableModel):
    """One row per server and model (or server); sorted on ``Qt.UserRole``."""

    def __init__(self, names: Callable[[str], str] = str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.names = names  # a server's identity -> what the user calls it
        self.cells: list[UsageCell] = []
        self.per_server = False

    def set_cells(self, cells: list[UsageCell], per_server: bool) -> None:
        self.beginResetModel()
        self.cells, self.per_server = cells, per_server
        self.endResetModel()

    def _column(self, section: int) -> Column:
        return COLUMNS[section + (1 if self.per_server and section >= 1 else 0)]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.cells)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS) - (1 if self.per_server else 0)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        cell = self.cells[index.row()]
        _, text, key, tip = self._column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return self.names(cell.server) if index.column() == 0 else text(cell)
        if role == Qt.ItemDataRole.UserRole:
            return key(cell)
        if role == Qt.ItemDataRole.ToolTipRole:
            return tip(cell) or None
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= index.column() + (1 if self.per_server else 0) <= 7:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self._column(section)[0]
        return None


# (choice, unit of the value axis (SI prefixes added), value of a cell)
BAR_METRICS: list[tuple[str, str, Callable[[UsageCell], float]]] = [
    ("Tokens", "tokens", lambda c: c.total_tokens), ("Completion tokens", "tokens", lambda c: c.completion_tokens),
    ("Prompt tokens", "tokens", lambda c: c.prompt_tokens), ("Requests", "requests", lambda c: c.requests),
    ("Errors", "errors", lambda c: float(c.errors)), ("Busy time", "h", lambda c: c.busy_s / 3600.0),
    ("Energy", "J", lambda c: c.energy_j)]


class _Relay(QObject):
    report = Signal(object)


class UsagePanel(Panel):
    title = "Usage"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.relay = _Relay()
        self.relay.report.connect(self._show)
        self.range_box = QComboBox()
        self.range_box.addItems([label for label, _ in RANGES])
        self.range_box.setCurrentIndex(1)
        self.group_box = QComboBox()
        self.group_box.addItems([label for label, _ in GROUPS])
        self.group_box.setCurrentIndex(1)
        self.per_box = QComboBox()
        self.per_box.addItems(["per model", "per server"])
        self.bars_box = QComboBox()
        self.bars_box.addItems([label for label, _, _ in BAR_METRICS])
        self.bars_box.setToolTip("What the bars show")
        now = QDateTime.currentDateTime()
        self.custom_from = QDateTimeEdit(now.addDays(-7))
        self.custom_to = QDateTimeEdit(now)
        for edit in (self.custom_from, self.custom_to):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setVisible(False)
            edit.dateTimeChanged.connect(lambda _: self.requery())
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self.export_csv)
        self.status = QLabel()
        self.status.setStyleSheet(MUTED)
        for box in (self.range_box, self.group_box, self.per_box):
            box.currentIndexChanged.connect(lambda _: self.requery())
        self.bars_box.currentIndexChanged.connect(lambda _: self._draw())
        controls = QHBoxLayout()
        for w in (QLabel("Range:"), self.range_box, self.custom_from, self.custom_to, self.group_box,
                  self.per_box, QLabel("Bars:"), self.bars_box):
            controls.addWidget(w)
        controls.addStretch(1)
        controls.addWidget(self.status)
        controls.addWidget(self.export_button)

        self.totals = QLabel()
        self.totals.setTextFormat(Qt.TextFormat.RichText)
        self.totals.setWordWrap(True)
        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(utcOffset=None)})
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(160)
        self.legend = QLabel()  # above the chart, wrapping: a legend inside it would cover bars
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.bars: list[pg.BarGraphItem] = []
        self.model = UsageTableModel(runtime.display_name, self)
        self.sorter = QSortFilterProxyModel(self)
        self.sorter.setSourceModel(self.model)
        self.sorter.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.sorter)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.empty = note_label(EMPTY, padding=12)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        chart = QWidget()
        chart_layout = QVBoxLayout(chart)
        chart_layout.setContentsMargins(0, 0, 0, 0)
        chart_layout.addWidget(self.legend)
        chart_layout.addWidget(self.plot, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(chart)
        split.addWidget(self.table)
        split.setSizes([300, 300])
        self.stack.addWidget(split)
        totals_page = QWidget()
        page = QVBoxLayout(totals_page)
        page.setContentsMargins(0, 0, 0, 0)
        page.addWidget(self.totals)
        page.addWidget(self.stack, 1)
        self.trends = TrendsView(runtime.store.reader, runtime.display_name)
        self.pages = QTabWidget()
        self.pages.setDocumentMode(True)
        self.pages.addTab(totals_page, "Totals")
        self.pages.addTab(self.trends, "Trends per model")
        self.pages.currentChanged.connect(self._page_changed)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.pages, 1)

        self.report: UsageReport | None = None
        self._conn: sqlite3.Connection | None = None
        self._busy = False
        self._dirty = True
        self._queried_at = float("-inf")

    def _page_changed(self, _index: int) -> None:
        totals = self.pages.currentWidget() is not self.trends
        for w in (self.group_box, self.per_box, self.bars_box, self.export_button):
            w.setEnabled(totals)  # the trends are per model and per day, whatever these say
        self.requery()

    # ------------------------------------------------------------------ querying
    def current_range(self, now: float) -> tuple[float, float]:
        preset = RANGES[self.range_box.currentIndex()][1]
        custom = preset == "custom"
        self.custom_from.setVisible(custom)
        self.custom_to.setVisible(custom)
        if custom:
            return (self.custom_from.dateTime().toSecsSinceEpoch(), self.custom_to.dateTime().toSecsSinceEpoch())
        return preset_range(preset, now, self._first_session())

    def _first_session(self) -> float | None:
        try:  # its own connection: the panel's may be busy on the worker thread
            conn = self.runtime.store.reader()
            try:
                return first_recorded(conn)
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self.runtime.store.reader()
        return self._conn

    def requery(self) -> None:
        self._dirty = True
        self.refresh(time.time())

    def refresh(self, now: float) -> None:
        if self.pages.currentWidget() is self.trends:
            self.trends.refresh(self.current_range(now), self._dirty)
            self._dirty = False
            return
        if self._busy or (not self._dirty and now - self._queried_at < REQUERY_S):
            return
        t0, t1 = self.current_range(now)
        group = GROUPS[self.group_box.currentIndex()][1]
        per_server = self.per_box.currentIndex() == 1
        self._busy, self._dirty, self._queried_at = True, False, now
        self.status.setText("Reading…")
        conn = self._connection()

        def work() -> tuple[UsageReport, float]:
            started = time.perf_counter()
            report = usage_report(conn, t0, t1, group)
            return (report.by_server() if per_server else report), time.perf_counter() - started
        run_in_thread("llmmon-usage-query", work, self.relay.report)

    def _show(self, result: object) -> None:
        self._busy = False
        if isinstance(result, Exception):
            log.warning("usage query failed: %s", result)
            self.status.setText(f"Cannot read usage: {result}")
            return
        assert isinstance(result, tuple)
        self.report, seconds = result
        self.status.setText(f"{datetime.now():%H:%M} · {seconds * 1000:.0f} ms")
        self._draw()
        if self._dirty:  # the choice changed while reading
            self.requery()

    # ------------------------------------------------------------------ drawing
    def _draw(self) -> None:
        report = self.report
        if report is None:
            return
        per_server = self.per_box.currentIndex() == 1
        self.model.set_cells(report.rows, per_server)
        self.stack.setCurrentIndex(1 if report.rows else 0)
        self.totals.setText(self._totals_text(report.total))
        self._draw_bars(report, per_server)

    @staticmethod
    def _totals_text(t: UsageCell) -> str:
        error_share = f" ({t.errors / t.requests:.1%})" if t.requests else ""
        energy = (f" &nbsp;·&nbsp; <b>{t.joules_per_token:.3g} J</b> per completion token"
                  + (" (estimate)" if t.energy_shared else "") if t.joules_per_token is not None else "")
        return (f"<span style='font-size: 15px'><b>{t.requests:,.0f}</b> requests &nbsp;·&nbsp; "
                f"<b>{compact(t.total_tokens)}</b> tokens ({compact(t.prompt_tokens)} prompt, "
                f"{compact(t.completion_tokens)} completion) &nbsp;·&nbsp; <b>{t.errors:,}</b> errors{error_share}"
                f" &nbsp;·&nbsp; busy <b>{_busy(t.busy_s)}</b>{energy}</span>")

    def _draw_bars(self, report: UsageReport, per_server: bool) -> None:
        for bar in self.bars:
            self.plot.removeItem(bar)
        self.bars = []
        legend = []
        label, unit, value = BAR_METRICS[self.bars_box.currentIndex()]
        def name(c: UsageCell) -> str:
            server = self.runtime.display_name(c.server)
            return server if per_server else f"{c.model or '(unknown)'} · {server}"

        totals: dict[str, float] = {}
        for cell in report.cells:
            totals[name(cell)] = totals.get(name(cell), 0.0) + value(cell)
        ranked = [k for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0]
        shown = ranked[:MAX_SERIES]
        periods = report.periods
        index = {p: i for i, p in enumerate(periods)}
        heights = np.zeros((len(shown) + 1, len(periods)))
        for cell in report.cells:
            key = name(cell)
            row = shown.index(key) if key in shown else len(shown)
            heights[row, index[cell.start]] += value(cell)
        width = PERIOD_S.get(report.group, 86400.0)
        x = np.array(periods) + width / 2
        base = np.zeros(len(periods))
        for row, series in enumerate([*shown, "other"]):
            if not heights[row].any():
                continue
            colour = PALETTE[row] if series != "other" else OTHER
            bar = pg.BarGraphItem(x=x, height=heights[row], y0=base.copy(), width=width * 0.8, brush=colour,
                                  pen=pg.mkPen(None))
            legend.append(f"<span style='color:{colour}'>■</span>&nbsp;{html.escape(series)}")
            self.plot.addItem(bar)
            self.bars.append(bar)
            base += heights[row]
        self.legend.setText(" &nbsp; ".join(legend))
        self.plot.setTitle(label)
        self.plot.setLabel("left", units=unit)
        start = report.t0 if report.group != "week" else local_midnight(report.t0)
        self.plot.setXRange(min([start, *periods]), max([report.t1, *(p + width for p in periods)]), padding=0.02)
        self.plot.setYRange(0, float(base.max()) * 1.15 if len(base) and base.max() > 0 else 1.0, padding=0)

    # ------------------------------------------------------------------ export
    def export_csv(self) -> None:
        if self.report is None:
            return
        suggested = str(Path.home() / f"llmmon-usage-{datetime.now():%Y%m%d}.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export usage as CSV", suggested, "CSV files (*.csv)")
        if path:
            self.save_csv(Path(path))

    def save_csv(self, path: Path) -> None:
        try:
            rows = write_csv(self.report, path) if self.report is not None else 0
        except OSError as exc:
            self.status.setText(f"Cannot write {path}: {exc.strerror or exc}")
            return
        self.status.setText(f"{rows} lines written to {path.name}")
