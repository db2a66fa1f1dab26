"""The window's status bar says where Prometheus can scrape this machine (``--serve-metrics``),
or, in red, why it cannot."""
from __future__ import annotations

from pathlib import Path

import httpx
from PySide6.QtCore import QSettings

from app.config import Settings
from app.runtime import Runtime
from tests.real_server.llama_server import free_port
from widgets.main_window import MainWindow


def window_for(runtime: Runtime, qtbot, tmp_path: Path) -> MainWindow:
    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    return window


def test_status_bar_shows_the_metrics_address_or_why_not(qtbot, db_file: Path, tmp_path: Path) -> None:
    port = free_port()
    serving = Runtime.create(db_file, Settings(discover_local=False), serve_metrics=("127.0.0.1", port))
    taken = Runtime.create(tmp_path / "other.db", Settings(discover_local=False), serve_metrics=("127.0.0.1", port))
    try:
        serving.start()
        taken.start()
        window = window_for(serving, qtbot, tmp_path)
        assert window.exporter_label.text() == f"metrics for Prometheus on http://127.0.0.1:{port}/metrics"
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        other = window_for(taken, qtbot, tmp_path)
        assert other.exporter_label.text() == \
            f"metrics exporter cannot listen on 127.0.0.1:{port}: Address already in use"
        assert "D55E00" in other.exporter_label.styleSheet()
    finally:
        taken.stop()
        serving.stop()


def test_no_exporter_no_label(qtbot, runtime: Runtime, tmp_path: Path) -> None:
    assert window_for(runtime, qtbot, tmp_path).exporter_label.isHidden()
