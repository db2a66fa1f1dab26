"""The main window: tabs of panels, a status bar with the database and session, and a quit
that flushes the store. Panels redraw on one UI timer, never per sample."""
from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from app.runtime import Runtime
from widgets.timeseries_plot import CurveSpec, TimeSeriesPlot

REDRAW_MS = 1000


class MainWindow(QMainWindow):
    """llmmon's window. It reads the runtime's live buffers and store status; it never talks to
    collectors directly."""

    def __init__(self, runtime: Runtime, window_s: float = 300.0) -> None:
        super().__init__()
        self.runtime = runtime
        self.window_s = window_s
        self.setWindowTitle("llmmon")
        self.resize(1200, 800)

        self.system_plot = TimeSeriesPlot(
            "CPU and memory", "%",
            [CurveSpec(("system_cpu_percent", ()), "CPU"),
             CurveSpec(("system_memory_percent", ()), "Memory")],
            y_range=(0, 100))
        overview = QWidget()
        layout = QVBoxLayout(overview)
        layout.addWidget(self.system_plot)
        self.tabs = QTabWidget()
        self.tabs.addTab(overview, "Overview")
        self.setCentralWidget(self.tabs)

        self.db_label = QLabel()
        self.store_label = QLabel()
        self.statusBar().addWidget(self.db_label, 1)
        self.statusBar().addPermanentWidget(self.store_label)

        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.menuBar().addMenu("&File").addAction(quit_action)

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def refresh(self) -> None:
        now = time.time()
        self.system_plot.refresh(self.runtime.hub.buffers, now, self.window_s)
        store = self.runtime.store
        self.db_label.setText(f"Database: {store.path}    Session: {store.session_id}")
        status = store.status
        if status.ok:
            self.store_label.setText(f"{status.written_rows:,} rows written")
            self.store_label.setStyleSheet("")
        else:
            self.store_label.setText(f"Database error: {status.error} "
                                     f"({status.pending_rows:,} rows waiting)")
            self.store_label.setStyleSheet("color: #D55E00; font-weight: bold")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        super().closeEvent(event)
