"""The system tray icon: its badge shows the alert state, its tooltip the live figures, its
balloon shows notifications when no desktop notification daemon is there. Its menu and its
place in the app (closing the window keeps llmmon monitoring) are in ``widgets/tray_menu.py``.

The icon reads the alert engine on a 1 s timer (redrawn only when the worst severity or the
count changes). :class:`TraySink` is the notifier's only Qt sink: it is called on the
notifier's thread and hands the notification to the GUI thread with a queued signal.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from app.alerts.engine import AlertEngine
from app.alerts.notify import Notification, Sink
from widgets.app_icon import app_icon
from widgets.theme import GOOD, SEVERITY_COLOURS

_MESSAGE_ICONS = {"info": QSystemTrayIcon.MessageIcon.Information,
                  "warning": QSystemTrayIcon.MessageIcon.Warning,
                  "critical": QSystemTrayIcon.MessageIcon.Critical}
BALLOON_MS = 10_000

log = logging.getLogger(__name__)


def badge_icon(severity: str | None, count: int, size: int = 64) -> QIcon:
    """llmmon's icon with a round badge: in the severity's colour holding the alert count, or a
    smaller green dot when no alert fires."""
    pixmap = app_icon().pixmap(size, size)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QColor("white"))
    if severity is None:
        painter.setBrush(QColor(GOOD))
        painter.drawEllipse(QRectF(size * 0.6, size * 0.6, size * 0.38, size * 0.38))
        painter.end()
        return QIcon(pixmap)
    badge = QRectF(size * 0.42, size * 0.42, size * 0.58, size * 0.58)
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
    """The tray icon. Its badge shows the alert state (a green dot when nothing fires, else the
    worst severity's colour with the number firing); its tooltip adds ``status_line()``, the live
    figures. The menu is the caller's.

    Args:
        engine: where the firing alerts are read.
        status_line: the tooltip's second line (servers up, tokens/s...), read every second.
    """

    notification_requested = Signal(object)  # a Notification, from any thread

    def __init__(self, engine: AlertEngine, status_line: Callable[[], str] = lambda: "",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.status_line = status_line
        self.messages_shown = 0  # balloons asked for (offscreen Qt draws none, tests count these)
        self.menu: QMenu | None = None  # Qt does not own a context menu: the tray keeps it alive
        self._shown_state: tuple[str | None, int] | None = None
        self.notification_requested.connect(self.show_notification)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def refresh(self) -> None:
        """Redraw the icon when the worst firing severity or the number of alerts changed, and
        the tooltip when its text did."""
        state = self.engine.worst_firing()
        if state != self._shown_state:
            self._shown_state = state
            self.setIcon(badge_icon(*state))
        severity, count = state
        alerts = (f"llmmon: {count} alert{'s' if count > 1 else ''} firing (worst: {severity})"
                  if severity is not None else "llmmon: no alerts firing")
        tip = "\n".join(line for line in (alerts, self.status_line()) if line)
        if tip != self.toolTip():
            self.setToolTip(tip)

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
