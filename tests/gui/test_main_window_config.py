"""A mistake in config.toml is shown in the window's status bar, with its key and line, while
the app runs on the defaults (issue 11, item 5). Real runtime, real window (offscreen)."""
from __future__ import annotations

from pathlib import Path

from app.config import config_path
from app.runtime import Runtime
from widgets.main_window import MainWindow


def test_config_mistakes_are_shown_in_the_status_bar(qtbot, db_file: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[general]\ndiscover_local = "false"\nretention_gb = inf\n', encoding="utf-8")
    runtime = Runtime.create(db_file)
    window = MainWindow(runtime)
    qtbot.addWidget(window)
    window.show()
    try:
        assert window.config_label.isVisible()
        assert window.config_label.text() == "config.toml: 2 mistakes (defaults used)"
        tip = window.config_label.toolTip().splitlines()
        assert tip[0].startswith(f"{path} line 2: general.discover_local must be true or false")
        assert tip[1].startswith(f"{path} line 3: general.retention_gb must be a number of GB")
    finally:
        window.close()
        runtime.stop()


def test_no_mistake_no_label(qtbot, runtime) -> None:
    window = MainWindow(runtime)
    qtbot.addWidget(window)
    window.show()
    try:
        assert not window.config_label.isVisible()
    finally:
        window.close()
