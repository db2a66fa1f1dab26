"""Closing the Settings window without saving, driven like a user (typing, Cancel, Escape, the
title bar's close button) on a real config file: with changes it asks "Discard your changes?"
(Discard / Keep editing); with nothing changed, or a value typed back to what it was, it closes
at once; nothing is written either way."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QAbstractButton, QApplication, QDialogButtonBox, QLineEdit, QMessageBox

from app.config import config_path
from widgets.settings_dialog import SettingsDialog

MINE = """\
# mine
[general]
retention_days = 30        # a month
"""


@pytest.fixture
def config() -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINE, encoding="utf-8")
    return path


class Questions:
    """Answers every message box that opens (as the user would, by clicking ``answer``) and
    keeps what each one asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[tuple[str, list[str]]] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._look)
        self.timer.start()

    def _look(self) -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            buttons = [b.text() for b in box.findChildren(QAbstractButton) if b.isVisible() and b.text()]
            self.asked.append((box.text(), buttons))
            next(b for b in box.buttons() if b.text() == self.answer).click()


@pytest.fixture
def questions() -> Iterator[Questions]:
    watcher = Questions("Keep editing")
    yield watcher
    watcher.timer.stop()


def type_into(qtbot, line: QLineEdit, text: str) -> None:
    line.setFocus()
    line.selectAll()
    qtbot.keyClick(line, Qt.Key.Key_Backspace)
    qtbot.keyClicks(line, text)


def open_dialog(qtbot) -> SettingsDialog:
    dialog = SettingsDialog()
    qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))  # test over: closed unasked
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


def cancel(qtbot, dialog: SettingsDialog) -> None:
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)


def test_nothing_changed_closes_at_once(qtbot, config: Path, questions: Questions) -> None:
    for close in (cancel, lambda qtbot, d: qtbot.keyClick(d, Qt.Key.Key_Escape), lambda qtbot, d: d.close()):
        dialog = open_dialog(qtbot)
        close(qtbot, dialog)
        assert not dialog.isVisible() and questions.asked == []


def test_a_value_typed_back_to_what_it_was_is_no_change(qtbot, config: Path, questions: Questions) -> None:
    dialog = open_dialog(qtbot)
    type_into(qtbot, dialog.storage.days, "7")
    type_into(qtbot, dialog.storage.days, "30")
    dialog.proxy.enabled.setChecked(True)
    dialog.proxy.enabled.setChecked(False)
    cancel(qtbot, dialog)
    assert not dialog.isVisible() and questions.asked == []


@pytest.mark.parametrize("how", ["Cancel", "Escape", "close button"])
def test_changes_are_discarded_only_when_the_user_says_so(qtbot, config: Path, questions: Questions,
                                                          how: str) -> None:
    dialog = open_dialog(qtbot)
    type_into(qtbot, dialog.storage.days, "7")
    dialog.show_page(dialog.polling)

    def close() -> None:
        if how == "Cancel":
            cancel(qtbot, dialog)
        elif how == "Escape":
            qtbot.keyClick(dialog, Qt.Key.Key_Escape)
        else:
            dialog.close()  # what the window manager's close button sends

    close()
    assert questions.asked == [("Discard your changes?", ["Discard", "Keep editing"])]
    assert dialog.isVisible() and dialog.storage.days.text() == "7"  # kept editing: nothing lost
    questions.answer = "Discard"
    close()
    assert len(questions.asked) == 2 and not dialog.isVisible()
    assert config.read_text(encoding="utf-8") == MINE


def test_an_added_server_is_a_change(qtbot, config: Path, questions: Questions) -> None:
    dialog = open_dialog(qtbot)
    dialog.show_page(dialog.servers)
    qtbot.mouseClick(dialog.servers.add_button, Qt.MouseButton.LeftButton)
    type_into(qtbot, dialog.servers.url, "http://10.0.0.7:8080")
    cancel(qtbot, dialog)
    assert [text for text, _ in questions.asked] == ["Discard your changes?"] and dialog.isVisible()


def test_quit_asks_about_unsaved_settings_but_a_signal_does_not_wait(qtbot, config: Path, questions: Questions,
                                                                    runtime, tmp_path: Path, monkeypatch) -> None:
    """Ctrl+Q with unsaved settings asks (Keep editing keeps llmmon running); SIGTERM from a
    logout or Ctrl-C quits without a question nobody may be there to answer."""
    from PySide6.QtCore import QSettings

    from widgets.main_window import MainWindow

    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)

    def quit_now() -> None:  # QApplication.quit's close of every window, without ending the test's loop
        for top in QApplication.topLevelWidgets():
            if top.isVisible() and not top.close():
                return
        quits.append(True)

    quits: list[bool] = []
    monkeypatch.setattr(QApplication, "quit", staticmethod(quit_now))
    window.show()
    dialog = window.open_settings("storage")
    qtbot.waitExposed(dialog)
    type_into(qtbot, dialog.storage.days, "7")
    window.quit_app()
    assert questions.asked == [("Discard your changes?", ["Discard", "Keep editing"])]
    assert dialog.isVisible() and quits == []  # kept editing: llmmon runs on
    window.quit_app(ask=False)  # what SIGTERM and Ctrl-C call
    assert len(questions.asked) == 1 and not dialog.isVisible() and quits == [True]
    assert config.read_text(encoding="utf-8") == MINE
