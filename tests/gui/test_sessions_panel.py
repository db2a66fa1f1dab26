"""The Sessions tab, driven like a user would: read the list, rename, open a past session,
start/stop, delete after confirming, export with progress and cancel."""
from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from app.config import Settings
from app.records import Sample
from app.runtime import Runtime
from collectors.system import SystemCollector
from tests.support import query
from tests.support.session_data import MODELS, SERVER, record_session
from widgets.sessions_panel import COLUMNS, NAME, NOTE, SessionsPanel


@pytest.fixture
def runtime(db_file: Path):
    rt = Runtime.create(db_file, settings=Settings(retention_days=7), session_name="earlier")
    record_session(rt.store, SystemCollector())
    rt.store.begin_session("now")
    yield rt
    rt.stop()


@pytest.fixture
def panel(qtbot, runtime: Runtime) -> SessionsPanel:
    p = SessionsPanel(runtime)
    qtbot.addWidget(p)
    p.resize(1300, 400)
    p.show()
    qtbot.waitUntil(lambda: p.table.rowCount() == 2)
    return p


def cell(panel: SessionsPanel, row: int, column: str) -> str:
    return panel.table.item(row, COLUMNS.index(column)).text()


def test_lists_sessions_with_what_they_recorded(panel: SessionsPanel) -> None:
    assert [cell(panel, r, "Name") for r in range(2)] == ["now", "earlier"]
    assert cell(panel, 0, "Ended") == "recording"
    assert cell(panel, 1, "Requests") == "8 via llmmon"  # no server counted requests
    assert cell(panel, 1, "Tokens") == f"{105 + 394:,} via llmmon"
    assert cell(panel, 1, "Alerts") == "1"
    assert cell(panel, 1, "Servers") == SERVER
    assert MODELS[0] in cell(panel, 1, "Models") and "tiny-llama" in cell(panel, 1, "Models")
    assert cell(panel, 1, "Size").endswith(("kB", "MB"))
    assert "keeping 7 days" in panel.summary.text() and "Nothing is due" in panel.summary.text()


def test_rename_note_and_open(qtbot, panel: SessionsPanel, db_file: Path) -> None:
    earlier = query(db_file, "SELECT id FROM sessions WHERE name='earlier'")[0][0]
    panel.table.item(1, NAME).setText("llama vs qwen")  # what committing a cell edit does
    qtbot.waitUntil(lambda: query(db_file, "SELECT name FROM sessions WHERE id=?", (earlier,)) == [("llama vs qwen",)],
                    timeout=20_000)
    panel.table.item(1, NOTE).setText("fan replaced")
    qtbot.waitUntil(lambda: query(db_file, "SELECT note FROM sessions WHERE id=?", (earlier,)) == [("fan replaced",)],
                    timeout=20_000)
    qtbot.waitUntil(lambda: panel.status.text() == "Note saved.", timeout=20_000)
    panel.table.item(1, NAME).setText("   ")  # a name cannot be blank: refused, and put back
    assert panel.status.text() == "A session needs a name."
    qtbot.waitUntil(lambda: cell(panel, 1, "Name") == "llama vs qwen", timeout=20_000)
    panel.select(earlier)
    with qtbot.waitSignal(panel.openSessionRequested) as opened:
        qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    assert opened.args == [earlier]


def test_an_earlier_action_finishing_last_does_not_replace_the_later_outcome(qtbot, panel: SessionsPanel) -> None:
    """Each edit waits for the store on a thread of its own, and a busy machine can wake the
    earlier one last (seen on a loaded machine: a rename's "Renamed." shown after the note's "Note
    saved."). The status stays the outcome of the last action."""
    held = threading.Event()
    panel._act(held.wait, "Renamed.")  # the rename, its thread held back as by a busy machine
    panel._act(lambda: None, "Note saved.")
    qtbot.waitUntil(lambda: panel.status.text() == "Note saved.")
    with qtbot.waitSignal(panel._acted):
        held.set()
    assert panel.status.text() == "Note saved."


def test_delete_asks_first_and_removes_only_that_session(qtbot, panel: SessionsPanel, runtime: Runtime,
                                                          db_file: Path) -> None:
    panel.select(runtime.store.session_id)
    assert not panel.delete_button.isEnabled()  # the recording session cannot be deleted
    earlier = query(db_file, "SELECT id FROM sessions WHERE name='earlier'")[0][0]
    runtime.store.put(SystemCollector().poll())
    runtime.store.flush()
    kept = query(db_file, "SELECT count(*) FROM samples WHERE session_id=?", (runtime.store.session_id,))
    panel.select(earlier)
    qtbot.mouseClick(panel.delete_button, Qt.MouseButton.LeftButton)
    box = panel.confirm_box
    assert box is not None and box.isVisible() and "earlier" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert query(db_file, "SELECT count(*) FROM sessions") == [(2,)]

    qtbot.mouseClick(panel.delete_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.confirm_box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1)
    assert cell(panel, 0, "Name") == "now" and "Deleted" in panel.status.text()
    for table in ("samples", "requests", "events", "alert_events"):
        assert query(db_file, f"SELECT count(*) FROM {table} WHERE session_id=?", (earlier,)) == [(0,)]
    assert query(db_file, "SELECT count(*) FROM samples WHERE session_id=?", (runtime.store.session_id,)) == kept


def test_new_and_stop(qtbot, panel: SessionsPanel, runtime: Runtime, db_file: Path) -> None:
    qtbot.mouseClick(panel.new_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.table.rowCount() == 3)
    assert cell(panel, 0, "Ended") == "recording" and cell(panel, 1, "Ended") != "recording"
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: runtime.store.session_id is None and cell(panel, 0, "Ended") != "recording")
    assert query(db_file, "SELECT count(*) FROM sessions WHERE ended IS NULL") == [(0,)]
    assert not panel.stop_button.isEnabled()


def test_export_dialog_writes_the_files_and_can_cancel(qtbot, panel: SessionsPanel, runtime: Runtime,
                                                        db_file: Path, tmp_path: Path) -> None:
    earlier = query(db_file, "SELECT id FROM sessions WHERE name='earlier'")[0][0]
    panel.select(earlier)
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    dialog = panel.export_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.folder_edit.setText(str(tmp_path / "earlier"))
    dialog.resolution_box.setCurrentText("1 s")
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.exported is not None, timeout=20_000)
    assert dialog.progress.value() == 1000 and "Exported" in dialog.status.text()
    assert dialog.open_button.isEnabled()
    with open(tmp_path / "earlier" / "samples.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == query(db_file, "SELECT count(*) FROM samples WHERE session_id=?", (earlier,))[0][0]

    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)  # nothing running: closes
    assert not dialog.isVisible()

    # A bigger session (the real machine's values, one poll a second for ~1 h): cancel it.
    real = [s for s in SystemCollector().poll() if isinstance(s, Sample)]
    runtime.store.put(Sample(s.name, s.value, s.ts - 3600 + t, s.labels) for t in range(3600) for s in real)
    runtime.store.flush()
    panel.select(runtime.store.session_id)
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    dialog = panel.export_dialog
    dialog.folder_edit.setText(str(tmp_path / "big"))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)  # while it runs
    qtbot.waitUntil(lambda: not dialog.running, timeout=20_000)
    assert dialog.status.text() == "Cancelled: nothing was written." and dialog.isVisible()
    # Nothing written: the folder is empty, or was never made (cancelled while reading the session).
    assert not (tmp_path / "big").exists() or list((tmp_path / "big").iterdir()) == []
