"""The main window: tabs of panels, a status bar with the database and session, and a quit
that flushes the store. Panels redraw on one UI timer, never per sample, and only the visible
tab does any work."""
from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget

from app.runtime import Runtime
from widgets.overview_panel import OverviewPanel
from widgets.panel import Panel

REDRAW_MS = 1000


def panel_factories() -> list[Callable[[Runtime], Panel]]:
    """The tabs, in order. Adding a tab is one line here."""
    return [
        OverviewPanel,
    ]


class MainWindow(QMainWindow):
    """llmmon's window. It reads the runtime's live buffers and store status; it never talks to
    collectors directly."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.setWindowTitle("llmmon")
        self.resize(1200, 800)

        self.tabs = QTabWidget()
        self.panels: list[Panel] = []
        for factory in panel_factories():
            panel = factory(runtime)
            self.panels.append(panel)
            self.tabs.addTab(panel, panel.title)
        self.tabs.currentChanged.connect(lambda _: self.refresh())
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

    def panel(self, kind: type[Panel]) -> Panel:
        return next(p for p in self.panels if isinstance(p, kind))

    def refresh(self) -> None:
        now = time.time()
        current = self.tabs.currentWidget()
        if isinstance(current, Panel):
            current.refresh(now)
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
