"""What a user met walking through the settings, the menus and the empty tabs on a real desktop
(Xvfb, openbox, trayer, dunst; screenshots in /work/shots/walk-*): in the dark theme a disabled
form reads as disabled; a button that could do nothing is off; counts read as words do; the
Help menu's folders are named even where no file manager opens them; and a tab with no server
points to where servers are added now (the Settings window, not a file to edit)."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QColor, QImage, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QLabel,
    QMenu,
    QStyle,
    QStyleOptionButton,
    QTableWidgetItem,
    QWidget,
)

from app.config import ServerEntry, Settings
from app.records import Health, HealthState
from app.runtime import Runtime
from tests.support import free_port
from widgets.header_strip import HeaderStrip
from widgets.main_window import MainWindow
from widgets.overview_panel import OverviewPanel
from widgets.panel import ADD_SERVER
from widgets.servers_panel import ServersPanel
from widgets.sessions_panel import SessionsPanel
from widgets.settings_dialog import SettingsDialog
from widgets.theme import apply_colour_scheme
from widgets.tray_menu import status_line


def brightest_text(widget: QWidget) -> int:
    """The lightness (0-255) of the brightest pixel the widget draws: its text on a dark theme."""
    image: QImage = widget.grab().toImage()
    return max(QColor(image.pixel(x, y)).lightness() for x in range(image.width()) for y in range(image.height()))


def contrast(widget: QWidget) -> float:
    """WCAG contrast between the widget's background (its commonest pixel) and the pixel of its
    text farthest from it: how readable its text is."""
    image: QImage = widget.grab().toImage()
    pixels = [QColor(image.pixel(x, y)) for x in range(image.width()) for y in range(image.height())]

    def luminance(c: QColor) -> float:
        channels = [v / 255 for v in (c.red(), c.green(), c.blue())]
        r, g, b = (v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    background = luminance(QColor.fromRgb(Counter(c.rgb() for c in pixels).most_common(1)[0][0]))
    text = max(pixels, key=lambda c: abs(luminance(c) - background))
    light, dark = sorted((luminance(text), background), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def form_label(parent: QWidget, text: str) -> QLabel:
    return next(label for label in parent.findChildren(QLabel) if label.text() == text)


@pytest.fixture
def dark_dialog(qtbot) -> Iterator[SettingsDialog]:
    """The Settings window shown in the dark theme (the system's again afterwards)."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_colour_scheme(app, "dark")
    try:
        dialog = SettingsDialog()
        qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))  # test over: closed unasked
        dialog.show()
        yield dialog
    finally:
        apply_colour_scheme(app, "system")


def test_in_the_dark_theme_a_disabled_form_looks_disabled(qtbot, dark_dialog: SettingsDialog) -> None:
    """No server selected: the Servers page's form is off, and its labels must look it (they
    were as bright as live ones, inviting a click that does nothing)."""
    servers = dark_dialog.servers
    assert not servers.editor.isEnabled()
    off = brightest_text(form_label(servers.editor, "URL"))
    servers.add_server()  # a server selected: the same form, live
    assert servers.editor.isEnabled()
    on = brightest_text(form_label(servers.editor, "URL"))
    assert on > 200 and off < on - 80, (off, on)


def test_in_the_dark_theme_a_disabled_fields_placeholder_looks_disabled(qtbot, dark_dialog: SettingsDialog) -> None:
    """The Servers page's Name field with no server selected: its hint was drawn as bright as in
    a live field; now dimmer than that, and no brighter than the disabled labels beside it."""
    servers = dark_dialog.servers
    assert not servers.name.isEnabled() and not servers.name.text() and servers.name.placeholderText()
    off, label_off = brightest_text(servers.name), brightest_text(form_label(servers.editor, "URL"))
    servers.add_server()
    servers.name.clearFocus()  # no focus frame: the placeholder is the brightest thing drawn
    assert servers.name.isEnabled() and not servers.name.text()
    on = brightest_text(servers.name)
    assert off < on - 30 and off <= label_off, (off, on, label_off)


def test_remove_route_is_off_until_a_route_is_selected(qtbot) -> None:
    dialog = SettingsDialog()
    qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))  # test over: closed unasked
    dialog.show()
    proxy = dialog.proxy
    assert proxy.table.rowCount() == 0 and not proxy.remove_button.isEnabled()
    qtbot.mouseClick(proxy.add_button, Qt.MouseButton.LeftButton)  # a new route comes selected
    assert proxy.remove_button.isEnabled()
    proxy.table.setItem(0, 2, QTableWidgetItem("http://127.0.0.1:8000"))
    qtbot.mouseClick(proxy.remove_button, Qt.MouseButton.LeftButton)
    assert proxy.table.rowCount() == 0 and not proxy.remove_button.isEnabled()


def test_a_tab_without_servers_points_to_the_settings_window(qtbot, runtime: Runtime, tmp_path: Path) -> None:
    """...and the Sessions tab counts one session as one."""
    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    assert ADD_SERVER == "File → Settings… → Servers"
    assert window.commands.settings_window.text() == "&Settings…"  # the place the messages name
    overview = window.panel(OverviewPanel)
    qtbot.waitUntil(lambda: bool(overview.tokens_plot.empty_text))
    # What discovery reports after trying the usual ports and finding nothing.
    runtime.hub.publish([Health("discovery", HealthState.DOWN, time.time(), kind="discovery",
                                reason="no LLM server found; not found: Ollama :11434 (connection refused)")])
    servers = window.panel(ServersPanel)
    window.show_panel(ServersPanel)
    qtbot.waitUntil(lambda: "What llmmon tried" in servers.empty.text(), timeout=10_000)
    shown = [overview.tokens_plot.empty_text, servers.empty.text(),
             window.findChild(HeaderStrip).tiles["servers"].toolTip()]
    for text in shown:
        assert ADD_SERVER in text and "config.toml" not in text, text
    # The Sessions tab (and the Storage page's preview) count the one session of this run in words.
    sessions = window.panel(SessionsPanel)
    window.show_panel(SessionsPanel)
    qtbot.waitUntil(lambda: "keeping" in sessions.summary.text(), timeout=10_000)
    assert " · 1 session · keeping " in sessions.summary.text()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_notes_and_empty_charts_are_readable_in_both_themes(qtbot, runtime: Runtime, tmp_path: Path,
                                                            theme: str) -> None:
    """The settings' explanations ("Changes apply when you save…") and a chart's "No LLM server
    found yet…" were drawn in a disabled grey: 1.6:1 on the light theme, hard to read. Muted
    text must still reach 3.5:1."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_colour_scheme(app, theme)
    try:
        dialog = SettingsDialog()
        qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))  # test over: closed unasked
        dialog.show()
        note = next(label for label in dialog.servers.findChildren(QLabel)
                    if label.text().startswith("Changes apply when you save"))
        window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(window)
        window.resize(1024, 640)
        window.show()
        empty = window.panel(OverviewPanel).tokens_plot._empty
        qtbot.waitUntil(empty.isVisible)
        for widget in (note, empty):
            assert contrast(widget) >= 3.5, (widget.text(), contrast(widget))
    finally:
        apply_colour_scheme(app, "system")


def test_a_server_the_user_added_counts_in_servers_up_while_it_is_down(qtbot, db_file: Path,
                                                                       tmp_path: Path) -> None:
    """Added in the Settings, not answering (so its kind is unknown yet): the Servers tab
    listed it as down while the header said "Servers up: none" and told the user to add one."""
    runtime = Runtime.create(db_file, Settings(discover_local=False, servers=[
        ServerEntry(url=f"http://127.0.0.1:{free_port()}")]))
    runtime.start()
    try:
        window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(window)
        window.show()
        tile = window.findChild(HeaderStrip).tiles["servers"]
        qtbot.waitUntil(lambda: tile.value.text() == "0 / 1", timeout=20_000)
        assert ADD_SERVER not in tile.toolTip()
        assert status_line(runtime).startswith("0 of 1 servers up")
    finally:
        runtime.stop()


def test_in_the_dark_theme_an_unticked_box_and_radio_button_are_visible(qtbot, dark_dialog: SettingsDialog) -> None:
    """Fusion outlined them a shade darker than the dark window: an unticked "Run the metering
    proxy" or "Start on login" (in the File and tray menus too) showed as text alone."""
    for button in (dark_dialog.proxy.enabled, dark_dialog.appearance.buttons["light"]):
        assert not button.isChecked()
        style = button.style()
        option = QStyleOptionButton()
        button.initStyleOption(option)
        indicator = style.subElementRect(
            QStyle.SubElement.SE_CheckBoxIndicator if isinstance(button, QCheckBox)
            else QStyle.SubElement.SE_RadioButtonIndicator, option, button)
        image = button.grab(indicator).toImage()
        window = button.palette().color(QPalette.ColorRole.Window).lightness()
        edge = max(QColor(image.pixel(x, y)).lightness() for x in range(image.width())
                   for y in range(image.height()))
        assert edge >= window + 60, (button.text(), window, edge)  # an outline stands out
    menu = QMenu()
    qtbot.addWidget(menu)
    box = QAction("Start on login", menu)
    box.setCheckable(True)
    menu.addAction(box)
    menu.show()
    image = menu.grab().toImage()
    x_text = menu.actionGeometry(box).left()
    rect = menu.actionGeometry(box)
    lightest_left = max(QColor(image.pixel(x, y)).lightness()
                        for x in range(x_text, x_text + 24) for y in range(rect.top(), rect.bottom()))
    assert lightest_left >= menu.palette().color(QPalette.ColorRole.Window).lightness() + 60
