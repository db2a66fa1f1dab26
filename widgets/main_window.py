"""The main window: a header strip of big numbers, a toolbar choosing the time range, tabs of
panels and a status bar with the database and session. Panels redraw on one UI timer (never
per sample) and only the visible tab does any work; the timer runs only while the window is
shown and not minimised, and a tick with no new data since the last redraw draws nothing
(up to ``STALE_REDRAW_S``, so "no fresh data" still shows). Geometry, the chosen tab and the
time range are restored from QSettings.

Closing the window does what ``close_behaviour`` says (the app sets it: hide to the tray when
there is one, else ask and quit); File → Quit always quits."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TypeVar

from PySide6.QtCore import QEvent, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app import server_kinds
from app.runtime import Runtime
from app.storage.history import HistorySource
from app.storage.queries import session_range
from app.summary import summarize
from widgets.alerts_panel import AlertsPanel
from widgets.fleet_panel import FleetPanel
from widgets.gpu_panel import GpuPanel
from widgets.header_strip import HeaderStrip
from widgets.model_panel import ModelPanel
from widgets.overview_panel import OverviewPanel
from widgets.panel import Panel, TabShelf
from widgets.prompt_panel import PromptPanel
from widgets.requests_panel import RequestsPanel
from widgets.servers_panel import ServersPanel
from widgets.sessions_panel import SessionsPanel
from widgets.settings_dialog import SettingsDialog
from widgets.smoothing_button import SmoothingButton
from widgets.theme import BAD, WARN, emphasis, restyle
from widgets.time_window import SPANS, TimeWindow
from widgets.timeseries_plot import TimeSeriesPlot
from widgets.usage_panel import UsagePanel
from widgets.window_commands import WindowCommands

REDRAW_MS = 1000
QWIDGETSIZE_MAX = (1 << 24) - 1  # Qt's "no maximum size" (not exported by PySide6)
STALE_REDRAW_S = 5.0  # redraw at least this often without new data: figures age into "no data"

P = TypeVar("P", bound=Panel)

log = logging.getLogger(__name__)


class CloseBehaviour(Enum):
    CLOSE = "close"              # just close (tests; the app picks one of the others)
    HIDE_TO_TRAY = "tray"        # llmmon keeps monitoring in the tray
    ASK_TO_QUIT = "ask"          # no tray: closing quits llmmon, after asking


class _PublishCounter:
    """Counts the hub's published batches. Called on collector threads; the GUI thread only
    compares the count with the one it last drew (a lost increment still changes it)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, records: Sequence[object]) -> None:
        self.count += 1


def kind_panels() -> list[type[Panel]]:
    """The tabs of the server kinds that have one of their own, in the order of
    :data:`app.server_kinds.KINDS`."""
    panels: list[type[Panel]] = []
    for kind in server_kinds.KINDS:
        cls = server_kinds.load(kind.panel) if kind.panel else None
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, Panel)):
            raise TypeError(f"{kind.panel} (server kind {kind.id!r}) is not a Panel")
        if cls is not None:
            panels.append(cls)
    return panels


def panel_factories() -> list[Callable[[Runtime], Panel]]:
    """The tabs, in order. Adding a tab is one line here (a server kind's own tab is named in
    its line of app/server_kinds.py instead)."""
    return [
        OverviewPanel,
        ServersPanel,
        *kind_panels(),
        GpuPanel,
        RequestsPanel,
        ModelPanel,
        UsagePanel,
        AlertsPanel,
        PromptPanel,
        SessionsPanel,
        FleetPanel,
    ]


class MainWindow(QMainWindow):
    """llmmon's window. It reads the runtime's live buffers, health and store; it never talks to
    collectors directly."""

    hidden_to_tray = Signal()  # the user closed the window and llmmon keeps running

    def __init__(self, runtime: Runtime, settings: QSettings | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        self.settings = settings if settings is not None else QSettings()
        self.close_behaviour = CloseBehaviour.CLOSE
        self._quitting = False
        self._published = _PublishCounter()
        unsubscribe = runtime.hub.subscribe(self._published)
        self.destroyed.connect(lambda *_: unsubscribe())
        self._drawn: tuple[int, float] = (-1, 0.0)  # publish count and time of the last redraw
        self.setWindowTitle("llmmon")
        started = self._session_start()
        self.view = TimeWindow(session_start=started)
        self.history = HistorySource(runtime.hub.buffers, runtime.store.reader)

        self.header = HeaderStrip()
        self.banner = QPushButton()
        self.banner.setVisible(False)
        self.banner.setStyleSheet(f"background: {WARN}; color: black; padding: 4px; border: none;")
        self.banner.clicked.connect(self.view.back_to_live)
        self.tabs = QTabWidget()
        self.panels: list[Panel] = []
        for factory in panel_factories():
            panel = factory(runtime)
            self.panels.append(panel)
            self.tabs.addTab(panel, panel.title)
            if isinstance(panel, SessionsPanel):
                panel.openSessionRequested.connect(self.show_session)
            if isinstance(panel, AlertsPanel):
                panel.notificationSettingsRequested.connect(lambda: self.open_settings("notifications"))
            panel.view = self.view
        for plot in self.tabs.findChildren(TimeSeriesPlot):
            plot.attach(self.view, self.history)
            plot.server_names = runtime.display_name  # legends say what the user named a server
        # tabs of server kinds not configured nor seen wait in a "More" menu
        self.shelf = TabShelf(self.tabs, self.panels, (s.kind for s in runtime.settings.servers))
        self.tabs.currentChanged.connect(lambda _: self.refresh())
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self._build_toolbar()

        self.db_label = QLabel()
        self.store_label = QLabel()
        # Drawn once a second as the row count grows: opaque, so the status bar and the window
        # behind it are not drawn again; and of a fixed size while it counts, because a label
        # whose size hint changes makes the status bar lay out and repaint everything in it
        # (an idle window's CPU, bench/idle.py).
        self.store_label.setAutoFillBackground(True)
        self.store_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._counting_size = QSize(self.store_label.fontMetrics().horizontalAdvance("999,999,999 rows written"),
                                    self.store_label.sizeHint().height())
        self.config_label = QLabel()  # config.toml mistakes: each kept its default, the app runs
        self.statusBar().addWidget(self.db_label, 1)
        self.statusBar().addPermanentWidget(self.config_label)
        self.statusBar().addPermanentWidget(self.store_label)
        self.exporter_label = QLabel()  # --serve-metrics / [exporter]: where Prometheus scrapes, or why not
        self.exporter_label.setVisible(runtime.exporter is not None)
        self.statusBar().addPermanentWidget(self.exporter_label)
        self._show_config_problems(runtime.problems)

        self.commands = WindowCommands(self)

        self.view.changed.connect(self._view_changed)
        self._restore_state()
        self.timer = QTimer(self)  # started when the window shows
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        self.refresh()

    # ------------------------------------------------------------------ building
    def _show_config_problems(self, problems: list[str]) -> None:
        n = len(problems)
        self.config_label.setText(f"config.toml: {n} mistake{'s' if n > 1 else ''} (defaults used)" if n else "")
        self.config_label.setToolTip("\n".join(problems))
        restyle(self.config_label, f"color: {BAD}" if n else "")
        self.config_label.setVisible(bool(n))

    def _build_toolbar(self) -> None:
        bar = QToolBar("Time range")
        bar.setObjectName("time-range")
        bar.setMovable(False)
        bar.addWidget(QLabel(" Show: "))
        self.span_box = QComboBox()
        self.span_box.addItems([label for label, _ in SPANS])
        self.span_box.currentIndexChanged.connect(lambda i: self.view.set_span(SPANS[i][1]))
        bar.addWidget(self.span_box)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Stop the charts scrolling (recording continues)")
        self.pause_button.toggled.connect(lambda on: self.view.set_paused(on, time.time()))
        bar.addWidget(self.pause_button)
        self.smooth_button = SmoothingButton(self.view, self.settings)
        bar.addWidget(self.smooth_button)
        self.addToolBar(bar)

    def _session_start(self) -> float | None:
        sid = self.runtime.store.session_id
        if sid is None:
            return None
        conn = self.runtime.store.reader()
        try:
            found = session_range(conn, sid)
        finally:
            conn.close()
        return found[0] if found else None

    # ------------------------------------------------------------------ behaviour
    def panel(self, kind: type[P]) -> P:
        return next(p for p in self.panels if isinstance(p, kind))

    def show_panel(self, kind: type[Panel]) -> None:
        self.tabs.setCurrentWidget(self.panel(kind))
        self.bring_to_front()

    def bring_to_front(self) -> None:
        """Show the window (from the tray, minimised or behind others) and give it the focus."""
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.show()
        self.raise_()
        self.activateWindow()

    def quit_app(self, ask: bool = True) -> None:
        """Quit llmmon, whatever closing the window would do. The Settings window with unsaved
        changes asks first (Keep editing cancels the quit) unless ``ask`` is False: a SIGTERM
        (the session logging out) or Ctrl-C must not wait on a question nobody may be there
        to answer."""
        for dialog in self.findChildren(SettingsDialog):
            if not dialog.isVisible():
                continue
            if ask:
                dialog.reject()  # asks when something changed
                if dialog.isVisible():
                    return  # "Keep editing": llmmon runs on
            else:
                if dialog.has_changes():
                    log.warning("quitting: the settings window's unsaved changes are dropped")
                dialog.done(QDialog.DialogCode.Rejected)
        self._quitting = True
        self.save_state()
        QApplication.quit()  # closes the windows (this one accepts now), then aboutToQuit

    def open_settings(self, page: str = "") -> SettingsDialog:
        """The settings window, over the main window (whose charts go on updating), at ``page``
        (an attribute of :class:`SettingsDialog`: ``"notifications"``...) if given; saving
        applies at once. Asked again while it is open, it comes to the front."""
        dialog = self.findChild(SettingsDialog)
        if dialog is None or not dialog.isVisible():
            dialog = SettingsDialog(self.runtime, parent=self,
                                    desktop_actions=[self.commands.start_minimised, self.commands.start_on_login])
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.saved.connect(lambda: self._settings_saved(dialog))
            dialog.open()
        else:
            dialog.raise_()
            dialog.activateWindow()
        if page:
            dialog.show_page(getattr(dialog, page))
        return dialog

    def _settings_saved(self, dialog: SettingsDialog) -> None:
        self.statusBar().showMessage("; ".join(["Settings saved and applied", *dialog.proxy_errors]), 10_000)
        self._show_config_problems(self.runtime.problems)
        self.panel(AlertsPanel).show_sinks()  # the notification settings may have changed

    def show_session(self, session_id: int) -> None:
        """Show a past session's time range from the database, read-only."""
        conn = self.runtime.store.reader()
        try:
            found = session_range(conn, session_id)
        finally:
            conn.close()
        if found is None:
            return
        t0, t1 = found
        self.view.show_fixed(t0, t1 if t1 is not None else time.time(), f"session {session_id}")

    def _view_changed(self) -> None:
        self.history.invalidate()
        fixed = self.view.fixed
        if fixed is not None:
            self.banner.setText(
                f"Viewing {self.view.fixed_label} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(fixed[0]))}"
                f" – {time.strftime('%H:%M', time.localtime(fixed[1]))}), read-only. Click to go back to live.")
        self.banner.setVisible(fixed is not None)
        self.span_box.setEnabled(fixed is None)
        self.pause_button.setEnabled(fixed is None)
        if self.pause_button.isChecked() != self.view.paused:
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(self.view.paused)
            self.pause_button.blockSignals(False)
        self.refresh()

    def _tick(self) -> None:
        """The UI timer: redraw when something was published since the last redraw."""
        published, drawn_at = self._drawn
        if self._published.count != published or time.monotonic() - drawn_at >= STALE_REDRAW_S:
            self.refresh()

    def refresh(self) -> None:
        self._drawn = (self._published.count, time.monotonic())
        now = time.time()
        hub = self.runtime.hub
        alerts = self.runtime.alerts.worst_firing() if self.runtime.alerts is not None else None
        self.header.show_summary(summarize(hub.buffers, hub.health, now, alerts))
        self.shelf.sync(list(hub.health.values()))
        current = self.tabs.currentWidget()
        if isinstance(current, Panel):
            current.refresh(now)
        store = self.runtime.store
        session = store.session_id
        self.db_label.setText(f"Database: {store.path}    Session: "
                              f"{session if session is not None else 'stopped (not recording)'}")
        if self.runtime.exporter is not None:
            exporter = self.runtime.exporter
            self.exporter_label.setText(exporter.status())
            restyle(self.exporter_label, "" if exporter.running else emphasis(BAD))
        self._show_store_status()

    def _show_store_status(self) -> None:
        """Red when recording stopped or writes fail; the drop counts (values outside the bounds,
        records the database could not take) with their reasons in the tooltip."""
        store, hub = self.runtime.store, self.runtime.hub
        status = store.status
        failure = self.runtime.failure()
        dropped = ", ".join(s for s in (hub.dropped(), status.drops) if s)
        n_dropped = status.dropped_rows + hub.bounds.faults.total + hub.faults.total
        drops = f" · {n_dropped:,} dropped values" if n_dropped else ""
        counting = False  # the plain row count, of a known width: anything else is a sentence
        if failure:
            text, style = f"Recording stopped: {failure}. Restart llmmon (details in its log)", emphasis(BAD)
        elif store.session_id is None:
            text, style = "Not recording: start a new session in the Sessions tab", emphasis(WARN)
        elif status.ok:
            text, style, counting = f"{status.written_rows:,} rows written{drops}", "", not drops
        else:
            text, style = f"Database error: {status.error} ({status.pending_rows:,} rows waiting){drops}", emphasis(BAD)
        if counting:
            self.store_label.setFixedSize(self._counting_size)
        else:  # a sentence: as wide as it needs
            self.store_label.setMinimumSize(0, 0)
            self.store_label.setMaximumSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX)
        self.store_label.setText(text)
        restyle(self.store_label, style)
        self.store_label.setToolTip(f"Dropped: {dropped}. See docs/metrics.md, Bounds." if dropped else "")

    # ------------------------------------------------------------------ state
    def _restore_state(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:  # first start: 1400×900, or less on a small screen (the title bar must stay on it)
            available = self.screen().availableGeometry()
            self.resize(min(1400, available.width() * 9 // 10), min(900, available.height() * 9 // 10))
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        tab = s.value("window/tab", 0, type=int)
        if isinstance(tab, int) and 0 <= tab < self.tabs.count():
            self.tabs.setCurrentIndex(tab)
        span_index = s.value("window/span", 0, type=int)
        if isinstance(span_index, int) and 0 <= span_index < self.span_box.count():
            self.span_box.setCurrentIndex(span_index)

    def save_state(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/tab", self.tabs.currentIndex())
        s.setValue("window/span", self.span_box.currentIndex())
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        if not self._quitting and self.close_behaviour is CloseBehaviour.ASK_TO_QUIT:
            if not self._confirm_quit():
                event.ignore()
                return
            self._quitting = True
            QTimer.singleShot(0, QApplication.quit)  # after this close, not inside it
        super().closeEvent(event)  # accepted: the window hides; with a tray llmmon runs on
        if not self._quitting and self.close_behaviour is CloseBehaviour.HIDE_TO_TRAY:
            self.hidden_to_tray.emit()

    def _confirm_quit(self) -> bool:
        answer = QMessageBox.question(
            self, "Quit llmmon?",
            "This desktop has no system tray for llmmon to stay in.\n"
            "Closing the window quits llmmon: monitoring and recording stop.",
            QMessageBox.StandardButton.Close | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Close)
        return answer == QMessageBox.StandardButton.Close

    # Redraw only while someone can see the window.
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._resume_redraws()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.WindowStateChange:
            if self.isMinimized():
                self.timer.stop()
            elif self.isVisible():
                self._resume_redraws()

    def _resume_redraws(self) -> None:
        if not self.timer.isActive() and not self.isMinimized():
            self.timer.start()
            self.refresh()
