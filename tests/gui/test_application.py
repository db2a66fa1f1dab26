"""The main window under Qt's offscreen platform, driven by the real runtime."""
from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.records import Sample
from app.runtime import Runtime
from tests.support import count
from widgets.main_window import MainWindow
from widgets.overview_panel import OverviewPanel


def test_window_shows_live_cpu_and_quit_flushes(qtbot, db_file: Path) -> None:
    runtime = Runtime.create(db_file, Settings(system_interval_s=0.25))
    published: list[Sample] = []
    runtime.hub.subscribe(lambda rs: published.extend(r for r in rs if isinstance(r, Sample)))
    window = MainWindow(runtime)
    qtbot.addWidget(window)
    window.show()
    runtime.start()
    cpu = window.panel(OverviewPanel).system_plot.curve(("system_cpu_percent", ()))
    qtbot.waitUntil(lambda: cpu.xData is not None and len(cpu.xData) >= 2, timeout=10_000)
    assert 0 <= cpu.yData.max() <= 100
    assert str(db_file) in window.db_label.text()
    assert f"Session: {runtime.store.session_id}" in window.db_label.text()
    window.close()
    runtime.stop()  # what QApplication.aboutToQuit triggers in the app
    assert count(db_file, "samples") == len(published)


def test_file_quit_ends_the_application_even_with_a_tray(qtbot, qapp, db_file: Path) -> None:
    """With a tray, closing the window only hides it; File → Quit (Ctrl+Q) must end llmmon."""
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QKeySequence

    runtime = Runtime.create(db_file, Settings(discover_local=False))
    window = MainWindow(runtime)
    qtbot.addWidget(window)
    qapp.setQuitOnLastWindowClosed(False)  # what installing the tray does
    window.show()
    assert window.quit_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Quit)  # Ctrl+Q
    QTimer.singleShot(0, window.quit_action.trigger)
    guard = QTimer()  # only if Quit failed to end the loop; stopped after, or it would end a later test's
    guard.setSingleShot(True)
    guard.timeout.connect(lambda: qapp.exit(99))
    guard.start(10_000)
    try:
        assert qapp.exec() == 0
    finally:
        guard.stop()
        qapp.setQuitOnLastWindowClosed(True)
        runtime.stop()


def test_the_window_carries_llmmons_name_and_icon(qapp) -> None:
    """Task switchers and title bars read the window class from the desktop file name and show
    the window icon: "llmmon" and its own icon, not "main.py" and a generic one."""
    from widgets.application import identify

    identify(qapp)  # what run_gui does first
    assert qapp.desktopFileName() == "llmmon"
    icon = qapp.windowIcon()
    assert not icon.isNull() and not icon.pixmap(32, 32).isNull()
