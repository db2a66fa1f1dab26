"""The Requests tab: the metering proxy's switch (saved for the next start) and, for every
server llmmon knows, the exact address to point its clients at; live request charts (tokens/s,
TTFT and latency percentiles, requests in flight) and a sortable table of recent requests."""
from __future__ import annotations

import time
from collections.abc import Callable
from html import escape
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.proxy.group import RouteStatus
from app.records import RequestRecord
from app.runtime import Runtime
from widgets.panel import ADD_SERVER, Panel, note_label
from widgets.theme import BAD
from widgets.timeseries_plot import MetricSpec, TimeSeriesPlot

WINDOW_S = 300.0


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value * 1000:.0f} ms"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _tokens(r: RequestRecord, value: int | None) -> str:
    if value is None:
        return ""
    return f"~{value}" if r.tokens_estimated and value is r.completion_tokens else str(value)


# (header, text of a record, sort key of a record, tooltip)
Column = tuple[str, Callable[[RequestRecord], str], Callable[[RequestRecord], Any], str]
COLUMNS: list[Column] = [
    ("Time", lambda r: time.strftime("%H:%M:%S", time.localtime(r.ts_start)), lambda r: r.ts_start, "When it started"),
    ("Server", lambda r: r.server, lambda r: r.server, ""),
    ("Endpoint", lambda r: r.endpoint, lambda r: r.endpoint, ""),
    ("Model", lambda r: r.model, lambda r: r.model, ""),
    ("Status", lambda r: str(r.status or ""), lambda r: r.status, "HTTP status the client got"),
    ("Stream", lambda r: "yes" if r.stream else "no", lambda r: r.stream, ""),
    ("TTFT", lambda r: _ms(r.ttft_s), lambda r: r.ttft_s or -1.0, "Time to the first chunk with text"),
    ("Latency", lambda r: _ms(r.latency_s), lambda r: r.latency_s or -1.0, "Until the last byte"),
    ("ITL mean", lambda r: _ms(r.itl_mean_s), lambda r: r.itl_mean_s or -1.0, "Mean gap between chunks"),
    ("ITL p99", lambda r: _ms(r.itl_p99_s), lambda r: r.itl_p99_s or -1.0, "99th percentile gap"),
    ("Prompt tok", lambda r: _tokens(r, r.prompt_tokens), lambda r: r.prompt_tokens or -1, "As the server reported"),
    ("Output tok", lambda r: _tokens(r, r.completion_tokens), lambda r: r.completion_tokens or -1,
     "As the server reported; ~ = counted chunks (the server gave no count)"),
    ("Server tok/s", lambda r: _rate(r.server_tokens_per_s), lambda r: r.server_tokens_per_s or -1.0,
     "Decode speed the server reported"),
    ("Client tok/s", lambda r: _rate(r.client_tokens_per_s), lambda r: r.client_tokens_per_s or -1.0,
     "Output tokens after the first, over the time between first and last chunk"),
    ("Load", lambda r: _ms(r.load_s), lambda r: r.load_s or -1.0, "Model load time the server reported"),
    ("Finish", lambda r: r.finish_reason, lambda r: r.finish_reason, "done_reason / finish_reason"),
    ("Error", lambda r: r.error_type + (f": {r.error}" if r.error else ""), lambda r: r.error_type, ""),
    ("Client", lambda r: r.client, lambda r: r.client, ""),
]

HOW_TO = ("No requests recorded yet.\n\nTurn on the proxy above, then point your clients at the address it "
          "shows for your server instead of the server's own (its port + 1):\n"
          "• Ollama on :11434: OLLAMA_HOST=127.0.0.1:11435\n"
          "• OpenAI-compatible servers (llama.cpp, vLLM...): base_url=\"http://127.0.0.1:8081/v1\" "
          "for a server on :8080\n\n"
          "Bytes pass through unchanged; each request's timings and the server's own token counts "
          "appear here.")
NO_ROUTE = ("No LLM server found yet: a proxy address appears here for each server llmmon finds "
            f"or you add in {ADD_SERVER}.")


def client_setting(route: RouteStatus) -> str:
    """What to give a client of this server to go through the proxy.

    >>> client_setting(RouteStatus("ollama@127.0.0.1:11434", "", "http://127.0.0.1:11435", True))
    'OLLAMA_HOST=127.0.0.1:11435'
    >>> client_setting(RouteStatus("llamacpp@127.0.0.1:8080", "", "http://127.0.0.1:8081", True))
    'base_url=http://127.0.0.1:8081/v1'
    """
    if route.name.startswith("ollama@"):
        return f"OLLAMA_HOST={route.listen.removeprefix('http://')}"
    return f"base_url={route.listen}/v1"


_ROOT = QModelIndex()  # a flat table's only parent: the invisible root


SERVER_COLUMN = [c[0] for c in COLUMNS].index("Server")


class RequestTableModel(QAbstractTableModel):
    """Recent request records, newest first; the sort proxy sorts on ``Qt.UserRole``. Servers
    are shown by ``names`` (their display names)."""

    def __init__(self, parent: QWidget | None = None, names: Callable[[str], str] = str) -> None:
        super().__init__(parent)
        self.records: list[RequestRecord] = []
        self.names = names

    def set_records(self, records: list[RequestRecord]) -> None:
        self.beginResetModel()
        self.records = records
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        record = self.records[index.row()]
        _, text, key, _ = COLUMNS[index.column()]
        if index.column() == SERVER_COLUMN and role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole):
            return self.names(record.server)
        if role == Qt.ItemDataRole.DisplayRole:
            return text(record)
        if role == Qt.ItemDataRole.UserRole:
            return key(record)
        if role == Qt.ItemDataRole.ForegroundRole and not record.ok:
            return Qt.GlobalColor.red
        if role == Qt.ItemDataRole.ToolTipRole and COLUMNS[index.column()][0] == "Error" and record.error:
            return record.error
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][3] or None
        return None


class RequestsPanel(Panel):
    title = "Requests"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.enable = QCheckBox("Metering proxy")
        self.enable.setToolTip("Run a local proxy in front of each LLM server that measures every request "
                               "(remembered for the next start)")
        self.enable.toggled.connect(self._toggle)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(self.enable)
        top.addWidget(self.status, 1)

        self.tokens_plot = TimeSeriesPlot("Output tokens per second", "tokens/s",
                                          [MetricSpec("llm_tokens_per_second", "{server} {model}")])
        self.ttft_plot = TimeSeriesPlot("Time to first token", "s",
                                        [MetricSpec("llm_ttft_seconds", "{server} p{quantile}")])
        self.latency_plot = TimeSeriesPlot("Request latency", "s",
                                           [MetricSpec("llm_request_latency_seconds", "{server} p{quantile}")])
        self.active_plot = TimeSeriesPlot("Requests in flight", "requests",
                                          [MetricSpec("llm_requests_active", "{server}")])
        self.plots = [self.tokens_plot, self.ttft_plot, self.latency_plot, self.active_plot]
        charts = QGridLayout()
        for i, plot in enumerate(self.plots):
            charts.addWidget(plot, i // 2, i % 2)

        self.model = RequestTableModel(self, runtime.display_name)
        self.sorter = QSortFilterProxyModel(self)
        self.sorter.setSourceModel(self.model)
        self.sorter.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.sorter)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.empty = note_label(HOW_TO, padding=12)
        self.table_stack = QStackedWidget()
        self.table_stack.addWidget(self.empty)
        self.table_stack.addWidget(self.table)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(charts, 3)
        layout.addWidget(self.table_stack, 2)
        self._version = -1
        self._not_saved = ""  # why the switch could not be remembered for the next start
        self._sync_switch()

    def _sync_switch(self) -> None:
        proxies = self.runtime.proxies
        self.enable.blockSignals(True)
        self.enable.setChecked(bool(proxies and proxies.on))
        self.enable.setEnabled(proxies is not None)
        self.enable.blockSignals(False)
        self._show_status()

    def _toggle(self, on: bool) -> None:
        self._not_saved = self.runtime.switch_proxy(on)
        self._sync_switch()

    def _show_status(self) -> None:
        proxies = self.runtime.proxies
        if proxies is None:
            self.status.setText("The proxy is not available in this run.")
            return
        lines: list[str] = []
        for s in proxies.status():
            name = escape(self.runtime.display_name(s.name))
            if s.running:
                lines.append(f"<b>Point clients at {s.listen}</b> ({client_setting(s)}) instead of "
                             f"{escape(s.upstream)} — {name}")
            elif s.error:
                lines.append(f"<span style='color:{BAD}'>{name}: {escape(s.error)}</span>")
            else:
                lines.append(f"Off — would listen on {s.listen} for {escape(s.upstream)} — {name}")
        if not lines:
            lines.append(NO_ROUTE)
        if self._not_saved:
            lines.append(f"<span style='color:{BAD}'>Not remembered for the next start: "
                         f"{escape(self._not_saved)}</span>")
        text = "<br>".join(lines)
        if text != self.status.text():
            self.status.setText(text)

    def refresh(self, now: float) -> None:
        proxies = self.runtime.proxies
        if proxies is not None and proxies.on != self.enable.isChecked():
            self._sync_switch()  # started or stopped elsewhere (settings, another window)
        else:
            self._show_status()  # routes appear as servers are found
        for plot in self.plots:
            plot.set_empty_text("No requests through the proxy yet")
            plot.refresh(self.runtime.hub.buffers, now, WINDOW_S)
        if self.runtime.requests is not None:
            version, records = self.runtime.requests.recent()
            if version != self._version:
                self._version = version
                self.model.set_records(records)
                self.table_stack.setCurrentWidget(self.table if records else self.empty)
