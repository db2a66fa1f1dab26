"""What the user sees when recording goes wrong (issue 11): dropped values counted in the status
bar, a red status bar when the writer stops, the headless recorder's exit, and a dialog when
the database file is refused. Real runtime, real window (offscreen), real SQLite files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

import main
from app.config import Settings
from app.records import Sample
from app.runtime import Runtime
from widgets.main_window import MainWindow


class _Exploding:
    """A label whose text ends the thread converting it (a BaseException, as a bug may raise)."""

    def __str__(self) -> str:
        raise SystemExit("boom")


@pytest.fixture
def window(qtbot, db_file: Path):
    runtime = Runtime.create(db_file, Settings(discover_local=False))
    win = MainWindow(runtime)
    qtbot.addWidget(win)
    win.show()
    runtime.start()
    yield win
    win.close()
    runtime.stop()


def test_dropped_values_are_counted_in_the_status_bar(qtbot, window: MainWindow) -> None:
    hub = window.runtime.hub
    hub.publish([Sample("ollama_model_gpu_share_ratio", 2.0, 1.0), Sample("x_bytes", -1.0, 1.0),
                 Sample("x_bytes", float("inf"), 1.0)])
    qtbot.waitUntil(lambda: "3 dropped values" in window.store_label.text(), timeout=5000)
    tip = window.store_label.toolTip()
    assert "ratio above 1" in tip and "negative value" in tip and "non-finite value" in tip


def test_a_dead_writer_turns_the_status_bar_red_and_ends_headless_recording(qtbot, window: MainWindow,
                                                                            capsys) -> None:
    runtime = window.runtime
    runtime.store.put([Sample("x", 1.0, 1.0, ((_Exploding(), "v"),))])  # type: ignore[arg-type]
    qtbot.waitUntil(lambda: window.store_label.text().startswith("Recording stopped:"), timeout=5000)
    assert "the database writer stopped" in window.store_label.text()
    assert "#D55E00" in window.store_label.styleSheet()
    # The headless recorder watches the same failure: it stops by itself and says why.
    assert "the database writer stopped" in runtime.record_until_signalled()
    assert "recording stopped: the database writer stopped" in capsys.readouterr().err


def test_a_refused_database_is_shown_in_a_dialog_and_exits_non_zero(qtbot, db_file: Path, monkeypatch) -> None:
    db_file.write_bytes(os.urandom(8192))
    monkeypatch.setattr("app.logs.setup_logging", lambda *a, **k: None)  # keep the test's logging
    shown: list[str] = []

    def read_and_close() -> None:  # runs inside the dialog's own event loop
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            shown.append(box.text())
            box.accept()

    poll = QTimer()
    poll.timeout.connect(read_and_close)
    poll.start(50)
    try:
        code = main.main(["--db", str(db_file)])
    finally:
        poll.stop()
    assert code == main.EXIT_REFUSED
    assert len(shown) == 1 and f"llmmon cannot use the database {db_file}" in shown[0]
    assert "--db PATH" in shown[0]
