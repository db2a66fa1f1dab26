"""The window's desktop commands under Qt's offscreen platform, on the real runtime: pause and
resume recording, new session, start minimised / on login, the Help menu, closing (to the tray,
or asking), redraws only while visible and only with new data, and the tray's menu and tooltip."""
from __future__ import annotations

import html
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import PySide6
import pytest
import shiboken6
from PySide6.QtCore import QObject, QPoint, QSettings, QTimer, QUrl, Slot, qVersion
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QLabel, QMenu, QMessageBox

from app.config import ServerEntry, Settings, log_dir
from app.desktop_entry import MAIN_PY, autostart_path
from app.records import Sample, labels_of
from app.runtime import Runtime
from tests.sim.ollama import SimOllama
from tests.support import count
from tests.support.paint_counter import PaintCounter
from widgets.about_dialog import AboutDialog
from widgets.main_window import CloseBehaviour, MainWindow
from widgets.overview_panel import OverviewPanel
from widgets.prompt_panel import PromptPanel
from widgets.tray import AlertTray
from widgets.tray_menu import status_line, tell_once_about_tray, tray_menu
from widgets.window_commands import START_MINIMISED, START_ON_LOGIN


def ui_settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, runtime: Runtime, tmp_path: Path) -> MainWindow:
    w = MainWindow(runtime, ui_settings(tmp_path))
    qtbot.addWidget(w)
    return w


def test_pause_resume_and_new_session_from_the_menu(qtbot, window: MainWindow, runtime: Runtime,
                                                    db_file: Path) -> None:
    commands = window.commands
    first = runtime.store.session_id
    assert commands.pause.text() == "&Pause recording"
    commands.pause.trigger()
    qtbot.waitUntil(lambda: runtime.store.session_id is None)
    commands.sync()
    assert commands.pause.text() == "&Resume recording (new session)"
    rows = count(db_file, "samples")
    runtime.hub.publish([Sample("system_cpu_percent", 12.0, time.time())])
    runtime.store.flush()
    assert count(db_file, "samples") == rows  # paused: live views only
    assert runtime.hub.buffers.latest(("system_cpu_percent", ()))[1] == 12.0

    commands.pause.trigger()
    qtbot.waitUntil(lambda: runtime.store.session_id is not None)
    resumed = runtime.store.session_id
    commands.new_session.trigger()
    qtbot.waitUntil(lambda: runtime.store.session_id not in (None, resumed))
    runtime.hub.publish([Sample("system_cpu_percent", 13.0, time.time())])
    runtime.store.flush()
    assert count(db_file, "samples") == rows + 1
    sessions = runtime.store.reader().execute("SELECT id, ended IS NOT NULL FROM sessions ORDER BY id").fetchall()
    assert sessions == [(first, 1), (resumed, 1), (runtime.store.session_id, 0)]


def test_start_on_login_writes_a_valid_autostart_entry_and_both_toggles_are_remembered(
        qtbot, runtime: Runtime, tmp_path: Path) -> None:
    window = MainWindow(runtime, ui_settings(tmp_path))
    qtbot.addWidget(window)
    entry = autostart_path()
    assert entry.parent == Path(os.environ["XDG_CONFIG_HOME"]) / "autostart"
    assert not window.commands.start_on_login.isChecked() and not entry.exists()
    window.commands.start_on_login.trigger()
    window.commands.start_minimised.trigger()
    valid = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert valid.returncode == 0 and valid.stdout == "", valid.stdout
    text = entry.read_text()
    assert "X-GNOME-Autostart-enabled=true" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    assert shlex.split(exec_line[5:]) == [os.path.abspath(sys.executable), str(MAIN_PY)]

    again = MainWindow(runtime, ui_settings(tmp_path))  # the next start reads them back
    qtbot.addWidget(again)
    assert again.commands.start_on_login.isChecked() and again.commands.start_minimised.isChecked()
    entry.unlink()
    again.commands.refresh_autostart()  # on at start: the entry is written again for this llmmon
    assert entry.exists()
    again.commands.start_on_login.trigger()
    assert not entry.exists()
    assert ui_settings(tmp_path).value(START_ON_LOGIN, type=bool) is False
    assert ui_settings(tmp_path).value(START_MINIMISED, type=bool) is True


class UrlCatcher(QObject):
    """Receives the URLs QDesktopServices would hand to the file manager."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


def test_help_opens_the_log_and_data_folders(window: MainWindow, runtime: Runtime) -> None:
    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open")  # type: ignore[arg-type]  # the stub says bytes; PySide takes str
    try:
        window.commands.open_logs.trigger()
        said_logs = window.statusBar().currentMessage()
        window.commands.open_data.trigger()
        said_data = window.statusBar().currentMessage()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert [Path(u.toLocalFile()) for u in catcher.urls] == [log_dir(), runtime.store.path.parent]
    assert log_dir().is_dir()
    # Where the folder is, in words too: without a file manager nothing opens on the screen.
    assert said_logs == f"Log folder: {log_dir()} (opening it in the file manager)"
    assert said_data == f"Data folder: {runtime.store.path.parent} (opening it in the file manager)"


def test_about_names_the_versions_the_gpu_state_and_the_servers_found(qtbot, db_file: Path) -> None:
    with SimOllama() as sim:
        runtime = Runtime.create(db_file, Settings(discover_local=False, servers=[
            ServerEntry(url=sim.url, kind="ollama", name="desk-ollama")]))
        runtime.start()
        try:
            qtbot.waitUntil(lambda: any(h.kind == "gpu" for h in runtime.hub.health.values()) and any(
                h.kind == "ollama" and h.state.value == "up" for h in runtime.hub.health.values()), timeout=20_000)
            dialog = AboutDialog(runtime)
            qtbot.addWidget(dialog)
            text = html.unescape(dialog.text.text())
        finally:
            runtime.stop()
    gpu = next(h for h in runtime.hub.health.values() if h.kind == "gpu")
    assert f"<b>Python</b></td><td>{platform.python_version()} ({sys.executable})" in text
    assert f"<b>Qt</b></td><td>{qVersion()} (PySide6 {PySide6.__version__})" in text
    assert f"<b>llmmon</b></td><td>{version('llmmon')}" in text
    # No GPU here: NVML's own reason; with one, the driver version.
    assert f"<b>GPU</b></td><td>{gpu.reason if gpu.state.value != 'up' else 'NVIDIA driver ' + gpu.version}" in text
    assert f"<b>Servers</b></td><td>desk-ollama (ollama, 0.12.6) {sim.url}: up" in text
    assert f"<b>Database</b></td><td>{db_file}" in text


def test_closed_to_the_tray_the_window_stops_redrawing_and_comes_back(qtbot, window: MainWindow) -> None:
    window.close_behaviour = CloseBehaviour.HIDE_TO_TRAY
    window.show()
    qtbot.waitExposed(window)
    assert window.timer.isActive()
    with qtbot.waitSignal(window.hidden_to_tray):
        window.close()
    assert not window.isVisible() and not window.timer.isActive()
    window.bring_to_front()
    assert window.isVisible() and window.timer.isActive()
    window.showMinimized()
    qtbot.waitUntil(lambda: not window.timer.isActive())
    window.show_panel(PromptPanel)  # the tray's "Prompt test…"
    assert window.tabs.currentWidget() is window.panel(PromptPanel)
    assert not window.isMinimized() and window.timer.isActive()


def test_without_a_tray_closing_asks_and_cancel_keeps_llmmon_running(qtbot, window: MainWindow) -> None:
    window.close_behaviour = CloseBehaviour.ASK_TO_QUIT
    window.show()
    asked: list[str] = []

    def answer() -> None:
        box = QApplication.activeModalWidget()
        assert isinstance(box, QMessageBox)
        asked.append(box.text())
        box.button(QMessageBox.StandardButton.Cancel).click()

    QTimer.singleShot(0, answer)
    window.close()
    window.close_behaviour = CloseBehaviour.CLOSE  # so the test's clean-up closes it without asking
    assert asked and "no system tray" in asked[0] and "monitoring and recording stop" in asked[0]
    assert window.isVisible() and window.timer.isActive()


def test_a_tick_with_nothing_new_draws_nothing(window: MainWindow, runtime: Runtime, monkeypatch) -> None:
    overview = window.panel(OverviewPanel)
    drawn: list[float] = []
    real_refresh = overview.refresh

    def counted(now: float) -> None:
        drawn.append(now)
        real_refresh(now)

    monkeypatch.setattr(overview, "refresh", counted)
    window.refresh()
    drawn.clear()
    window._tick()
    window._tick()
    assert drawn == []  # nothing was published since the last redraw
    runtime.hub.publish([Sample("system_cpu_percent", 50.0, time.time())])
    window._tick()
    assert len(drawn) == 1
    assert overview.system_plot.curve(("system_cpu_percent", ())).yData[-1] == 50.0


def test_a_tick_with_the_same_figures_repaints_no_tile_and_no_status_text(qtbot, window: MainWindow,
                                                                          runtime: Runtime) -> None:
    """Figures that did not change are not drawn again: the header's tiles and the status bar's
    texts repaint only when what they say (or its colour) changes."""
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    for _ in range(5):  # the first rounds lay the window out and draw it whole
        window.refresh()
        QApplication.processEvents()
    labels = window.statusBar().findChildren(QLabel)
    counter = PaintCounter(*window.header.findChildren(QLabel), *labels)
    for _ in range(3):
        window.refresh()
        QApplication.processEvents()
    assert counter.paints == 0
    around = PaintCounter(window.statusBar(), window.db_label, window)
    counted = PaintCounter(window.store_label)
    before = window.store_label.text()
    now = time.time()
    runtime.hub.publish([Sample("system_cpu_percent", 50.0, now - i) for i in range(2000)])
    runtime.store.flush()  # the row count grows a digit or two: its text is drawn again, nothing around it
    window.refresh()
    QApplication.processEvents()
    assert counted.paints >= 1 and "rows written" in window.store_label.text()
    assert len(window.store_label.text()) > len(before)
    assert around.paints == 0
    window.commands.pause.trigger()  # a sentence instead of a count: shown whole
    label = window.store_label

    def says_not_recording() -> bool:
        window.refresh()
        QApplication.processEvents()
        return label.text().startswith("Not recording")

    qtbot.waitUntil(says_not_recording, timeout=10_000)
    qtbot.waitUntil(lambda: label.width() >= label.fontMetrics().horizontalAdvance(label.text()), timeout=5000)


def shown_entries(menu: QMenu) -> list[str]:
    """The entries a user sees in ``menu`` opened (separators left out)."""
    menu.popup(QPoint(0, 0))
    try:
        return [a.text() for a in menu.actions()
                if a.isVisible() and not a.isSeparator() and not menu.actionGeometry(a).isEmpty()]
    finally:
        menu.hide()


def test_paused_the_menus_offer_one_way_to_start_a_new_session(qtbot, window: MainWindow, runtime: Runtime) -> None:
    tray = tray_menu(window)
    file_menu = window.menuBar().actions()[0].menu()
    assert isinstance(file_menu, QMenu)
    assert shown_entries(tray)[1:3] == ["&Pause recording", "&New session"]
    window.commands.pause.trigger()
    qtbot.waitUntil(lambda: runtime.store.session_id is None)
    for menu in (tray, file_menu):
        shown = shown_entries(menu)
        assert "&Resume recording (new session)" in shown and "&New session" not in shown, shown
    window.commands.pause.trigger()  # resumed: a new session can be started again from either menu
    qtbot.waitUntil(lambda: runtime.store.session_id is not None)
    assert shown_entries(tray)[1:3] == ["&Pause recording", "&New session"]
    assert shown_entries(file_menu)[:2] == ["&New session", "&Pause recording"]


def test_tray_menu_tooltip_and_the_one_time_notice(qtbot, window: MainWindow, runtime: Runtime,
                                                   tmp_path: Path) -> None:
    menu = tray_menu(window)
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert texts == ["Show llmmon", "&Pause recording", "&New session", "Prompt test…", "Start &minimised",
                     "Start on &login", "&Quit"]
    assert menu.actions()[-1] is window.commands.quit  # the same action as File → Quit (Ctrl+Q)
    window.show()
    menu.aboutToShow.emit()
    assert menu.actions()[0].text() == "Hide llmmon"
    menu.actions()[0].trigger()
    assert not window.isVisible()
    menu.actions()[0].trigger()
    assert window.isVisible()

    assert status_line(runtime) == "no LLM server found yet · no tokens/s now"
    now = time.time()
    runtime.hub.publish([Sample("llm_tokens_per_second", 41.5, now, labels_of(server="a", model="m")),
                         Sample("llm_tokens_per_second", 1.0, now, labels_of(server="b", model="m"))])
    tray = AlertTray(runtime.alerts, lambda: status_line(runtime))
    try:
        assert tray.toolTip() == "llmmon: no alerts firing\nno LLM server found yet · 42.5 tokens/s"
        assert tell_once_about_tray(tray, window.settings)
        assert not tell_once_about_tray(tray, ui_settings(tmp_path))  # remembered: only ever once
    finally:
        shiboken6.delete(tray)
