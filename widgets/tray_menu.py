"""The tray's place in the app: its menu (the window's own commands, show/hide, prompt test),
a click showing or hiding the window, and closing the window leaving llmmon in the tray (told
once, the first time). Without a tray none of this exists and closing the window quits."""
from __future__ import annotations

import logging
import time

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from app.runtime import Runtime
from app.summary import summarize
from widgets.main_window import CloseBehaviour, MainWindow
from widgets.prompt_panel import PromptPanel
from widgets.tray import BALLOON_MS, AlertTray, TraySink
from widgets.window_commands import fill_menu

log = logging.getLogger(__name__)

CLOSE_NOTICE_SHOWN = "desktop/close_notice_shown"
CLOSE_NOTICE = "It runs on here in the tray. Quit from this icon's menu."


def status_line(runtime: Runtime) -> str:
    """The tooltip's live line: servers up, tokens/s now, and whether recording is paused."""
    summary = summarize(runtime.hub.buffers, runtime.hub.health, time.time())
    parts = [f"{summary.servers_up} of {summary.servers_total} servers up" if summary.servers_total
             else "no LLM server found yet",
             f"{summary.tokens_per_s:,.1f} tokens/s" if summary.tokens_per_s is not None else "no tokens/s now"]
    if runtime.store.session_id is None:
        parts.append("recording paused")
    return " · ".join(parts)


def tray_menu(window: MainWindow) -> QMenu:
    """Show/hide, the recording commands, the start-up toggles and Quit (the window's own
    actions, so both menus always agree)."""
    menu = QMenu()
    show_hide = QAction("Show llmmon", menu)
    show_hide.triggered.connect(lambda: toggle_window(window))
    prompt_test = QAction("Prompt test…", menu)
    prompt_test.triggered.connect(lambda: window.show_panel(PromptPanel))
    commands = window.commands

    def before_showing() -> None:
        show_hide.setText("Hide llmmon" if window.isVisible() and not window.isMinimized() else "Show llmmon")
        commands.sync()

    menu.aboutToShow.connect(before_showing)
    return fill_menu(menu, [show_hide, None, commands.pause, commands.new_session, prompt_test, None,
                            commands.start_minimised, commands.start_on_login, None, commands.quit])


def toggle_window(window: MainWindow) -> None:
    if window.isVisible() and not window.isMinimized():
        window.close()  # hides it, as the title bar's close button does
    else:
        window.bring_to_front()


def tell_once_about_tray(tray: AlertTray, settings: QSettings) -> bool:
    """The first time ever the window is closed to the tray, say that llmmon runs on."""
    if settings.value(CLOSE_NOTICE_SHOWN, False, type=bool):
        return False
    settings.setValue(CLOSE_NOTICE_SHOWN, True)
    settings.sync()
    tray.showMessage("llmmon keeps monitoring", CLOSE_NOTICE, QSystemTrayIcon.MessageIcon.Information, BALLOON_MS)
    return True


def install_tray(app: QApplication, window: MainWindow, runtime: Runtime) -> AlertTray | None:
    """Put llmmon in the system tray when the desktop has one: closing the window then keeps
    monitoring, and the tray becomes the notifier's fallback sink. Returns None without a tray."""
    if runtime.alerts is None or not QSystemTrayIcon.isSystemTrayAvailable():
        log.info("no system tray: closing the window quits llmmon (after asking)")
        return None
    tray = AlertTray(runtime.alerts, lambda: status_line(runtime), parent=app)
    tray.menu = tray_menu(window)
    tray.setContextMenu(tray.menu)
    tray.activated.connect(
        lambda reason: toggle_window(window) if reason == QSystemTrayIcon.ActivationReason.Trigger else None)
    if runtime.alerts.notifier is not None:
        runtime.alerts.notifier.add_sink(TraySink(tray))
    app.setQuitOnLastWindowClosed(False)
    window.close_behaviour = CloseBehaviour.HIDE_TO_TRAY
    window.hidden_to_tray.connect(lambda: tell_once_about_tray(tray, window.settings))
    tray.show()
    log.info("tray icon shown: closing the window keeps llmmon monitoring")
    return tray
