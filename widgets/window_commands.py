"""The main window's menus (File, Help) and the commands they share with the tray menu: one
``QAction`` each, so a toggle ticked in one menu is ticked in the other.

Pausing recording ends the current session (the charts stay live, nothing is written);
resuming starts a new one (so while paused "New session" is not offered: Resume is it).
"Start minimised" and "Start on login" are kept in QSettings; the second also writes or removes
the XDG autostart entry.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QMenu

from app.config import log_dir
from app.desktop_entry import set_autostart
from widgets.about_dialog import AboutDialog
from widgets.sessions_panel import SessionsPanel

if TYPE_CHECKING:
    from widgets.main_window import MainWindow

log = logging.getLogger(__name__)

START_MINIMISED = "desktop/start_minimised"
START_ON_LOGIN = "desktop/start_on_login"


def fill_menu(menu: QMenu, actions: list[QAction | None]) -> QMenu:
    """Add ``actions`` to ``menu`` in order, ``None`` being a separator."""
    for action in actions:
        if action is None:
            menu.addSeparator()
        else:
            menu.addAction(action)
    return menu


class WindowCommands(QObject):
    """Builds the window's menu bar; the tray menu reuses these actions."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        settings = window.settings
        self.new_session = self._action("&New session", self._new_session, "End this session and start another")
        self.pause = self._action("&Pause recording", self.toggle_recording)
        self.start_minimised = self._action("Start &minimised", None,
                                            "Start in the tray (or minimised) instead of showing the window")
        self.start_minimised.setCheckable(True)
        self.start_minimised.setChecked(bool(settings.value(START_MINIMISED, False, type=bool)))
        self.start_minimised.toggled.connect(lambda on: self._save(START_MINIMISED, on))
        self.start_on_login = self._action("Start on &login", None, "Start llmmon when you log in")
        self.start_on_login.setCheckable(True)
        self.start_on_login.setChecked(bool(settings.value(START_ON_LOGIN, False, type=bool)))
        self.start_on_login.toggled.connect(self._set_start_on_login)
        self.settings_window = self._action("&Settings…", window.open_settings,
                                            "Servers, polling, proxy, storage, theme, notifications, privacy")
        self.settings_window.setShortcut(QKeySequence("Ctrl+,"))
        self.close_window = self._action("&Close window", window.close)
        self.close_window.setShortcut(QKeySequence.StandardKey.Close)
        self.quit = self._action("&Quit", window.quit_app, "Stop monitoring and recording, and exit")
        self.quit.setShortcut(QKeySequence.StandardKey.Quit)
        self.open_logs = self._action("Open &log folder", lambda: self._open_folder("Log", log_dir()))
        self.open_data = self._action("Open &data folder",
                                      lambda: self._open_folder("Data", window.runtime.store.path.parent))
        self.about = self._action("&About llmmon", self.show_about)
        self.about_dialog: AboutDialog | None = None

        file_menu = fill_menu(window.menuBar().addMenu("&File"), [
            self.new_session, self.pause, None, self.settings_window, self.start_minimised, self.start_on_login,
            None, self.close_window, self.quit])
        file_menu.aboutToShow.connect(self.sync)
        fill_menu(window.menuBar().addMenu("&Help"), [self.open_logs, self.open_data, None, self.about])
        self.sync()

    def _action(self, text: str, slot: Callable[[], object] | None, tip: str = "") -> QAction:
        action = QAction(text, self)
        action.setStatusTip(tip)
        if slot is not None:
            action.triggered.connect(lambda: slot())
        return action

    # ------------------------------------------------------------------ recording
    @property
    def recording(self) -> bool:
        return self.window.runtime.store.session_id is not None

    def sync(self) -> None:
        """Menu texts that follow the state (called before a menu opens)."""
        self.pause.setText("&Pause recording" if self.recording else "&Resume recording (new session)")
        self.pause.setStatusTip("End this session: the charts stay live, nothing is written" if self.recording
                                else "Start a new session and write to the database again")
        # Paused, "New session" would do just what "Resume recording (new session)" does: one entry
        self.new_session.setVisible(self.recording)

    def toggle_recording(self) -> None:
        sessions = self.window.panel(SessionsPanel)
        sessions.stop() if self.recording else sessions.start_new()

    def _new_session(self) -> None:
        self.window.panel(SessionsPanel).start_new()

    # ------------------------------------------------------------------ settings
    def _save(self, key: str, value: bool) -> None:
        self.window.settings.setValue(key, value)
        self.window.settings.sync()

    def _set_start_on_login(self, on: bool) -> None:
        try:
            path = set_autostart(on)
        except OSError as exc:
            log.warning("cannot change the autostart entry: %s", exc)
            self.window.statusBar().showMessage(f"Start on login: {exc}", 10_000)
            self.start_on_login.blockSignals(True)
            self.start_on_login.setChecked(not on)
            self.start_on_login.blockSignals(False)
            return
        log.info("start on login %s (%s)", "on" if on else "off", path)
        self._save(START_ON_LOGIN, on)

    def refresh_autostart(self) -> None:
        """Rewrite the autostart entry when it is on, so it starts this llmmon (the checkout or
        the build may have moved since it was written)."""
        if self.start_on_login.isChecked():
            self._set_start_on_login(True)

    # ------------------------------------------------------------------ help
    def _open_folder(self, what: str, folder: Path) -> None:
        """Ask the desktop's file manager to open ``folder``, and say where it is in the status
        bar either way: Qt reports success once ``xdg-open`` starts, so on a desktop without a
        file manager nothing would open and the menu item would seem to do nothing."""
        folder.mkdir(parents=True, exist_ok=True)
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.window.statusBar().showMessage(f"{what} folder: {folder} (opening it in the file manager)", 15_000)
        else:
            self.window.statusBar().showMessage(f"{what} folder: {folder} (no file manager to open it)", 15_000)

    def show_about(self) -> None:
        self.about_dialog = AboutDialog(self.window.runtime, self.window)
        self.about_dialog.open()
