"""The system tray icon: its colour and badge show the worst firing alert, its balloon shows
notifications when no desktop notification daemon is there, and it keeps llmmon monitoring
after the window is closed.

The icon reads the alert engine on a 1 s timer (redrawn only when the worst severity or the
count changes). :class:`TraySink` is the notifier's only Qt sink: it is called on the
notifier's thread and hands the notification to the GUI thread with a queued signal.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QFont, QIcon, QPainter
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from app.alerts.engine import AlertEngine
from app.alerts.notify import Notification, Sink
from app.resources import ICON, resource_path
from app.runtime import Runtime
from widgets.theme import SEVERITY_COLOURS

if TYPE_CHECKING:
    from widgets.main_window import MainWindow  # which imports this module

ICON_PATH = resource_path(ICON)
_MESSAGE_ICONS = {"info": QSystemTrayIcon.MessageIcon.Information,
                  "warning": QSystemTrayIcon.MessageIcon.Warning,
                  "critical": QSystemTrayIcon.MessageIcon.Critical}
BALLOON_MS = 10_000

log = logging.getLogger(__name__)


def badge_icon(severity: str | None, count: int, size: int = 64) -> QIcon:
    """llmmon's icon with a round badge in the severity's colour holding the alert count."""
    pixmap = QIcon(str(ICON_PATH)).pixmap(size, size)
    if severity is None:
        return QIcon(pixmap)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    badge = QRectF(size * 0.42, size * 0.42, size * 0.58, size * 0.58)
    painter.setPen(QColor("white"))
    painter.setBrush(QColor(SEVERITY_COLOURS[severity]))
    painter.drawEllipse(badge)
    font = QFont()
    font.setBold(True)
    font.setPixelSize(int(size * 0.38))
    painter.setFont(font)
    painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, str(count) if count < 10 else "9+")
    painter.end()
    return QIcon(pixmap)


class AlertTray(QSystemTrayIcon):
    """The tray icon with a Show / Quit menu.

    Args:
        engine: where the firing alerts are read.
        show_window: brings the main window back.
        quit_app: quits llmmon (flushing the database).
    """

    notification_requested = Signal(object)  # a Notification, from any thread

    def __init__(self, engine: AlertEngine, show_window: Callable[[], None], quit_app: Callable[[], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.messages_shown = 0  # balloons asked for (offscreen Qt draws none, tests count these)
        self._shown_state: tuple[str | None, int] | None = None
        menu = QMenu()
        self.show_action = QAction("Show llmmon", menu)
        self.show_action.triggered.connect(show_window)
        self.quit_action = QAction("Quit", menu)
        self.quit_action.triggered.connect(quit_app)
        menu.addAction(self.show_action)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        self._menu = menu  # Qt does not own a context menu: keep it alive
        self.setContextMenu(menu)
        self.activated.connect(
            lambda reason: show_window() if reason == QSystemTrayIcon.ActivationReason.Trigger else None)
        self.notification_requested.connect(self.show_notification)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def refresh(self) -> None:
        """Recolour the icon when the worst firing severity or the number of alerts changed."""
        state = self.engine.worst_firing()
        if state == self._shown_state:
            return
        self._shown_state = state
        severity, count = state
        self.setIcon(badge_icon(severity, count))
        if severity is None:
            self.setToolTip("llmmon: no alerts firing")
        else:
            self.setToolTip(f"llmmon: {count} alert{'s' if count > 1 else ''} firing (worst: {severity})")

    def show_notification(self, notification: Notification) -> None:
        self.messages_shown += 1
        self.showMessage(notification.title, notification.body,
                         _MESSAGE_ICONS.get(notification.severity, QSystemTrayIcon.MessageIcon.Information),
                         BALLOON_MS)
        self.refresh()


class TraySink(Sink):
    """Notifier sink for the tray balloon (used when desktop notifications are unavailable)."""

    kind = "tray"

    def __init__(self, tray: AlertTray, available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable) -> None:
        self.tray = tray
        self._available = available

    def status(self) -> tuple[bool, str]:
        if self._available():
            return True, "tray balloon messages"
        return False, "no system tray on this desktop"

    def send(self, notification: Notification) -> bool:
        if not self._available():
            return False
        self.tray.notification_requested.emit(notification)  # queued to the GUI thread
        return True


class _KeepRunningOnClose(QObject):
    """Tells the user once that closing the window leaves llmmon in the tray."""

    def __init__(self, tray: AlertTray) -> None:
        super().__init__(tray)
        self.tray = tray
        self.told = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close and not self.told:
            self.told = True
            self.tray.showMessage("llmmon keeps monitoring",
                                  "Alerts still arrive here. Quit from this icon's menu.",
                                  QSystemTrayIcon.MessageIcon.Information, BALLOON_MS)
        return False


def install_tray(app: QApplication, window: MainWindow, runtime: Runtime) -> AlertTray | None:
    """Put llmmon in the system tray when the desktop has one: closing the window then keeps
    monitoring, and the tray becomes the notifier's fallback sink. Returns None without a tray."""
    if runtime.alerts is None or not QSystemTrayIcon.isSystemTrayAvailable():
        log.info("no system tray: closing the window quits llmmon")
        return None

    def show_window() -> None:
        window.timer.start()  # the main window stops its redraw timer when closed
        window.showNormal()
        window.raise_()
        window.activateWindow()

    tray = AlertTray(runtime.alerts, show_window, app.quit, parent=app)
    if runtime.alerts.notifier is not None:
        runtime.alerts.notifier.add_sink(TraySink(tray))
    app.setQuitOnLastWindowClosed(False)
    window.installEventFilter(_KeepRunningOnClose(tray))
    tray.show()
    log.info("tray icon shown: closing the window keeps llmmon monitoring")
    return tray
