"""The Settings window, driven like a user (typing, clicking Save) on real files, a real
runtime and simulated servers: values round-trip with the user's comments kept byte for byte;
every bad value is refused with its reason; secrets end up in the keyring and nowhere else;
Test connection names kind, version and models; Save applies to the running app."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.null
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLineEdit, QMenu, QTableWidgetItem

from app.alerts.rules import load_rules
from app.config import config_path, load_settings
from app.runtime import Runtime
from app.secrets import SERVICE
from collectors.discovery import api_key_name
from tests.sim.ollama import SimOllama
from tests.sim.upstream import SimUpstream
from tests.sim.vllm import SimVllm
from tests.support import free_port, wait_until
from tests.support.keyring_memory import MemoryKeyring
from tests.support.webhook_receiver import WebhookReceiver
from widgets.main_window import MainWindow
from widgets.settings_dialog import SettingsDialog
from widgets.theme import apply_colour_scheme

MINE = """\
# llmmon settings (mine)
[general]
retention_days = 30        # a month
system_interval_s = 1      # every second
future_option = "kept"     # not llmmon's yet

# the lab box
[[servers]]
url = "http://gpu-box:8000"
name = "lab"

[proxy]
enabled = false            # on when I measure
store_content = false
"""


@pytest.fixture
def config() -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINE, encoding="utf-8")
    return path


def open_dialog(qtbot, runtime: Runtime | None = None, **kwargs) -> SettingsDialog:
    dialog = SettingsDialog(runtime, **kwargs)
    qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))  # test over: closed unasked
    dialog.show()
    return dialog


def type_into(qtbot, line: QLineEdit, text: str) -> None:
    """Replace the field's text by typing, as a user does."""
    line.setFocus()
    line.selectAll()
    qtbot.keyClick(line, Qt.Key.Key_Backspace)
    qtbot.keyClicks(line, text)


def click_save(qtbot, dialog: SettingsDialog) -> None:
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Save), Qt.MouseButton.LeftButton)


def test_changed_values_round_trip_and_the_rest_of_the_file_stays_byte_for_byte(qtbot, config: Path) -> None:
    dialog = open_dialog(qtbot)
    type_into(qtbot, dialog.storage.days, "7")
    type_into(qtbot, dialog.polling.system, "2")
    dialog.proxy.enabled.setChecked(True)
    dialog.privacy.store_content.setChecked(True)
    dialog.show_page(dialog.servers)
    qtbot.mouseClick(dialog.servers.add_button, Qt.MouseButton.LeftButton)
    type_into(qtbot, dialog.servers.url, "http://10.0.0.7:8080")
    dialog.servers.kind.setCurrentIndex(dialog.servers.kind.findData("llamacpp"))
    click_save(qtbot, dialog)
    assert not dialog.isVisible(), dialog.message.text()

    expected = (MINE.replace("retention_days = 30 ", "retention_days = 7 ")
                .replace("system_interval_s = 1 ", "system_interval_s = 2 ")
                .replace("enabled = false ", "enabled = true ")
                .replace("store_content = false", "store_content = true")
                .replace('name = "lab"\n\n', 'name = "lab"\n\n[[servers]]\nurl = "http://10.0.0.7:8080"\n'
                                             'kind = "llamacpp"\n\n'))
    assert config.read_text(encoding="utf-8") == expected
    saved, _ = load_settings(config)
    assert (saved.retention_days, saved.system_interval_s, saved.proxy.enabled, saved.proxy.store_content) == \
        (7, 2, True, True)
    assert [(s.url, s.kind, s.name) for s in saved.servers] == \
        [("http://gpu-box:8000", "auto", "lab"), ("http://10.0.0.7:8080", "llamacpp", "")]

    again = open_dialog(qtbot)  # what was saved is what the next dialog shows
    assert (again.storage.days.text(), again.polling.system.text()) == ("7", "2")
    assert again.proxy.enabled.isChecked() and again.privacy.store_content.isChecked()
    assert again.servers.table.rowCount() == 2


# (page, field, typed, under the field, in the list under the pages): each field says, in the
# words of its label (never a config key like ``general.retention_days``), what to type.
BAD = [
    ("storage", "days", "-3", 'Must be a number of days from 0 to 36,500 (0 or "never": no limit); “-3” is refused',
     "Storage › Keep data for: must be a number of days"),
    ("storage", "gb", "lots", 'Must be a number of GB from 0 to 1,000,000 (0 or "never": no limit); “lots”',
     "Storage › Keep the database under: must be"),
    ("polling", "system", "0.1", "Must be a number from 0.25 to 3600 seconds; “0.1”",
     "Polling › This computer (CPU, memory, GPU) every: must be"),
    ("polling", "server", "often", "Must be a number from 0.25 to 3600 seconds", "Polling › Each LLM server every: "),
    ("privacy", "max_chars", "0", "Must be a whole number from 1 to 10,000,000; “0”", "Privacy › At most: must be"),
    ("servers", "url", "ftp://gpu-box", 'Must be a URL such as "http://gpu-box:8000"',
     'Servers › URL of server 1: must be a URL such as "http://gpu-box:8000"'),
    ("notifications", "group_s", "soon", "'soon' is not a duration (use e.g. 30s, 5m, 1h); “soon” is refused",
     "Notifications › At most one notification every: 'soon' is not a duration"),
    ("notifications", "url", "hooks.example.com/abc", "Must start with https://",
     "Notifications › New URL: must start"),
]


@pytest.mark.parametrize(("page", "field", "typed", "reason", "listed"), BAD, ids=[f"{p}.{f}" for p, f, *_ in BAD])
def test_a_bad_value_is_refused_with_its_reason_and_nothing_is_written(qtbot, config: Path, memory_keyring,
                                                                       page: str, field: str, typed: str,
                                                                       reason: str, listed: str) -> None:
    dialog = open_dialog(qtbot)
    line = getattr(getattr(dialog, page), field)
    dialog.show_page(getattr(dialog, page))
    type_into(qtbot, line, typed)
    dialog.show_page(dialog.appearance)  # Save from another page: the page with the problem comes back
    click_save(qtbot, dialog)
    assert dialog.isVisible()
    assert line.error.text().startswith(reason) and line.error.isVisible()
    assert "." not in line.error.text().split(" ")[0]  # no config key such as general.retention_days
    assert dialog.message.text().startswith("Not saved: 1 value to correct.\n" + listed)
    assert dialog.stack.currentIndex() == dialog.pages.index(getattr(dialog, page))
    assert config.read_text(encoding="utf-8") == MINE
    assert memory_keyring.store == {}


def test_a_bad_route_is_refused_with_its_reason(qtbot, config: Path) -> None:
    dialog = open_dialog(qtbot)
    qtbot.mouseClick(dialog.proxy.add_button, Qt.MouseButton.LeftButton)
    table = dialog.proxy.table
    table.setItem(0, 2, QTableWidgetItem("http://127.0.0.1:8000"))
    table.setItem(0, 3, QTableWidgetItem("99999"))
    click_save(qtbot, dialog)
    assert dialog.isVisible()
    assert dialog.proxy.errors.text() == \
        'Route 1, Listen: must be a port (1 to 65535) or "HOST:PORT"; “99999” is refused'
    assert dialog.message.text().endswith('Proxy › Route 1, Listen: must be a port (1 to 65535) or "HOST:PORT"; '
                                          '“99999” is refused')
    assert config.read_text(encoding="utf-8") == MINE


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Everything llmmon logs during the test, at every level, in a file (as the app's log)."""
    path = tmp_path / "llmmon.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()


def test_api_key_and_webhook_url_go_to_the_keyring_only(qtbot, config: Path, db_file: Path, log_file: Path,
                                                        memory_keyring: MemoryKeyring,
                                                        webhook_receiver: WebhookReceiver) -> None:
    key = "sk-very-secret-4b1d"
    hook = webhook_receiver.url("/hooks/T000/B000/XYZZYsecretpath")
    with SimVllm(api_key=key) as vllm:
        runtime = Runtime.create(db_file)
        try:
            runtime.start()
            dialog = open_dialog(qtbot, runtime)
            servers = dialog.servers
            qtbot.mouseClick(servers.add_button, Qt.MouseButton.LeftButton)
            type_into(qtbot, servers.url, vllm.url)
            type_into(qtbot, servers.key, key)
            qtbot.mouseClick(servers.test_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: "vLLM 0.32.0" in servers.test_result.text(), timeout=10_000)
            notifications = dialog.notifications
            notifications.format.setCurrentIndex(notifications.format.findData("json"))
            type_into(qtbot, notifications.url, hook)
            click_save(qtbot, dialog)
            assert not dialog.isVisible(), dialog.message.text()

            name = api_key_name(vllm.url)
            assert memory_keyring.store == {(SERVICE, name): key, (SERVICE, "webhook_url"): hook}
            # The running app reads the key where the dialog put it: the server is watched.
            wait_until(lambda: any(h.url == vllm.url and h.state == "up" for h in runtime.hub.health.values()),
                       timeout=15, what="the keyed vLLM watched")
            again = open_dialog(qtbot, runtime)
            assert "stored in the keyring" in again.servers.table.item(1, 3).text()
            qtbot.mouseClick(again.notifications.test_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: "webhook" in again.notifications.test_result.text(), timeout=10_000)
            assert webhook_receiver.received[-1].path == "/hooks/T000/B000/XYZZYsecretpath"
            assert "Delivered to" in again.notifications.test_result.text()
            again.close()
        finally:
            runtime.stop()
    text = config.read_text(encoding="utf-8")
    assert f'api_key_ref = "{name}"' in text
    places = [*config.parent.rglob("*"), *db_file.parent.glob(db_file.name + "*"), log_file]
    files = [p for p in places if p.is_file()]
    assert log_file in files and any(p.name == db_file.name for p in files) and config in files
    assert log_file.stat().st_size > 0
    for path in files:
        data = path.read_bytes()
        for secret in (key, hook, "XYZZYsecretpath"):
            assert secret.encode() not in data, f"{secret} found in {path}"


def test_without_a_secure_keyring_the_dialog_says_so_and_saves_the_server_without_a_key(qtbot, config: Path
                                                                                        ) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.null.Keyring())
    try:
        dialog = open_dialog(qtbot)
        servers = dialog.servers
        assert not servers.key.isEnabled() and servers.keyring_note.isVisible()
        assert "no secure keyring available" in servers.keyring_note.text()
        assert "save the server without a key" in servers.keyring_note.text()
        assert not dialog.notifications.url.isEnabled()
        said = dialog.notifications.url_state.text()
        assert "install and unlock a Secret Service" in said and "webhook cannot be used" in said
        assert said.lower().count("secret service") == 1  # what to install, said once
        qtbot.mouseClick(servers.add_button, Qt.MouseButton.LeftButton)
        type_into(qtbot, servers.url, "http://box:8000")
        click_save(qtbot, dialog)
        assert not dialog.isVisible(), dialog.message.text()
    finally:
        keyring.set_keyring(previous)
    assert [s.url for s in load_settings(config)[0].servers] == ["http://gpu-box:8000", "http://box:8000"]
    assert "api_key_ref" not in config.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_test_connection_shows_kind_version_and_models(qtbot, config: Path, kind: str) -> None:
    with (SimOllama() if kind == "ollama" else SimVllm()) as sim:
        dialog = open_dialog(qtbot)
        servers = dialog.servers
        qtbot.mouseClick(servers.add_button, Qt.MouseButton.LeftButton)
        type_into(qtbot, servers.url, sim.url)
        qtbot.mouseClick(servers.test_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: servers.test_button.isEnabled(), timeout=10_000)
    expected = (f"Ollama 0.12.6 at {sim.url}: 1 model loaded (mistral:latest), 2 installed" if kind == "ollama"
                else f"vLLM 0.32.0 at {sim.url}: 1 model (tiny-llama)")
    assert servers.test_result.text() == expected


def test_test_connection_explains_a_server_that_is_not_there(qtbot, config: Path) -> None:
    dialog = open_dialog(qtbot)
    port = free_port()
    qtbot.mouseClick(dialog.servers.add_button, Qt.MouseButton.LeftButton)
    type_into(qtbot, dialog.servers.url, f"127.0.0.1:{port}")
    qtbot.mouseClick(dialog.servers.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.servers.test_button.isEnabled(), timeout=10_000)
    assert dialog.servers.test_result.text() == f"Cannot use http://127.0.0.1:{port}: connection refused on :{port}"


def test_save_applies_the_proxy_retention_notifications_and_theme_to_the_running_app(qtbot, db_file: Path,
                                                                                       config: Path) -> None:
    port = free_port()
    with SimUpstream() as up:
        config.write_text(f'[general]\ndiscover_local = false\n\n[[proxy.routes]]\nupstream = "{up.url}"\n'
                          f'listen = {port}\nkind = "ollama"\n', encoding="utf-8")
        runtime = Runtime.create(db_file)
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        try:
            runtime.start()
            assert runtime.proxies is not None and not runtime.proxies.running
            dialog = open_dialog(qtbot, runtime)
            dialog.proxy.enabled.setChecked(True)
            type_into(qtbot, dialog.storage.days, "3")
            type_into(qtbot, dialog.storage.gb, "1.5")
            dialog.notifications.desktop.setChecked(False)
            dialog.appearance.buttons["dark"].setChecked(True)
            click_save(qtbot, dialog)
            assert not dialog.isVisible(), dialog.message.text()
            assert runtime.proxies.running and [s.listen for s in runtime.proxies.status()] == \
                [f"http://127.0.0.1:{port}"]
            assert (runtime.store.retention_days, runtime.store.retention_max_bytes) == (3, 1_500_000_000)
            assert runtime.alerts is not None and runtime.alerts.notifier is not None
            assert runtime.alerts.notifier.settings.desktop is False
            assert load_rules(runtime.alerts.rule_file.path).notifications.desktop is False
            assert "# " in runtime.alerts.rule_file.path.read_text(encoding="utf-8")  # the file's comments stay
            assert app.palette().color(app.palette().ColorRole.Window).lightness() < 128

            off = open_dialog(qtbot, runtime)
            assert off.appearance.buttons["dark"].isChecked() and off.proxy.enabled.isChecked()
            off.proxy.enabled.setChecked(False)
            click_save(qtbot, off)
            assert not runtime.proxies.running
            assert load_settings(config)[0].proxy.enabled is False
        finally:
            apply_colour_scheme(app, "system")
            runtime.stop()


def test_the_storage_page_previews_what_the_typed_limits_would_remove(qtbot, runtime: Runtime, config: Path
                                                                       ) -> None:
    import time

    from app.records import Sample

    runtime.start()
    now = time.time()
    runtime.hub.publish([Sample("test_value", 1.0, now - 40 * 86400), Sample("test_value", 1.0, now)])
    runtime.store.flush()
    dialog = open_dialog(qtbot, runtime)
    dialog.show_page(dialog.storage)
    qtbot.waitUntil(lambda: "keeping 30 days" in dialog.storage.preview.text(), timeout=10_000)
    assert "Next clean-up (the age limit) removes data before" in dialog.storage.preview.text()
    type_into(qtbot, dialog.storage.days, "never")
    qtbot.waitUntil(lambda: "Nothing is due for removal" in dialog.storage.preview.text(), timeout=10_000)


def test_file_menu_settings_opens_the_dialog_with_ctrl_comma(qtbot, runtime: Runtime, config: Path,
                                                             tmp_path: Path) -> None:
    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    menu = window.menuBar().actions()[0].menu()
    assert isinstance(menu, QMenu)
    action = next(a for a in menu.actions() if a.text() == "&Settings…")
    assert action.shortcut() == QKeySequence("Ctrl+,")
    action.trigger()
    dialog = window.findChild(SettingsDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.storage.days.text() == "30" and dialog.servers.table.item(0, 1).text() == "http://gpu-box:8000"
    assert window.open_settings() is dialog  # asked again: the same window comes forward
    dialog.reject()


def test_unchanged_settings_saved_leave_the_file_as_it_was(qtbot, config: Path) -> None:
    dialog = open_dialog(qtbot)
    before = config.stat().st_mtime_ns
    click_save(qtbot, dialog)
    assert not dialog.isVisible()
    assert config.read_text(encoding="utf-8") == MINE and config.stat().st_mtime_ns == before


def test_a_config_file_that_is_not_toml_is_shown_and_never_overwritten(qtbot, config: Path) -> None:
    config.write_text("[general\nretention_days = 30\n", encoding="utf-8")
    dialog = open_dialog(qtbot)
    assert dialog.problems.isVisible() and "config.toml" in dialog.problems.text()
    type_into(qtbot, dialog.storage.days, "7")
    click_save(qtbot, dialog)
    assert dialog.isVisible() and "not valid TOML" in dialog.message.text()
    assert config.read_text(encoding="utf-8") == "[general\nretention_days = 30\n"




def test_the_requests_tab_switch_is_the_same_saved_setting(qtbot, db_file: Path, config: Path) -> None:
    """Turning the proxy on in the Requests tab is remembered in config.toml (comments kept), so
    the settings window shows it on, and saving the window does not turn it off again."""
    from widgets.requests_panel import RequestsPanel

    port = free_port()
    with SimUpstream() as up:
        config.write_text(MINE.replace("store_content = false\n", f'store_content = false\n[[proxy.routes]]\n'
                                       f'upstream = "{up.url}"\nlisten = {port}\n'), encoding="utf-8")
        runtime = Runtime.create(db_file)
        try:
            panel = RequestsPanel(runtime)
            qtbot.addWidget(panel)
            panel.enable.setChecked(True)  # what a click does
            assert runtime.proxies is not None and runtime.proxies.running
            assert "enabled = true            # on when I measure" in config.read_text(encoding="utf-8")
            dialog = open_dialog(qtbot, runtime)
            assert dialog.proxy.enabled.isChecked()
            click_save(qtbot, dialog)
            assert runtime.proxies.running
        finally:
            runtime.stop()


def test_the_key_column_says_whether_the_keyring_really_holds_the_key(qtbot, config: Path,
                                                                      memory_keyring: MemoryKeyring) -> None:
    config.write_text(MINE.replace('name = "lab"\n', 'name = "lab"\napi_key_ref = "lab-key"\n\n[[servers]]\n'
                                   'url = "http://other:1"\napi_key_ref = "never-stored"\n'), encoding="utf-8")
    keyring.set_password(SERVICE, "lab-key", "sk-lab")
    dialog = open_dialog(qtbot)
    table = dialog.servers.table
    assert [table.item(row, 3).text() for row in range(2)] == [
        "stored in the keyring", "“never-stored” is not in the keyring"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typed=st.one_of(st.text(max_size=30), st.integers().map(str), st.floats().map(str),
                       st.sampled_from(["never", "0", "1e400", "-0", "nan", "inf", "9" * 400, "0x10", "1_000"])))
def test_whatever_is_typed_a_field_accepts_it_or_says_why(qtbot, typed: str) -> None:
    """Every checked field of the dialog, any text: a value, or a refusal with a reason; never an
    exception (a 400-digit number is out of range, not an overflow)."""
    from widgets.settings_fields import CheckedLine

    for key in ("general.retention_days", "general.retention_gb", "general.system_interval_s",
                "general.server_interval_s", "proxy.content_max_chars", "servers.url"):
        line = CheckedLine(key)
        line.setText(typed)
        errors: list[str] = []
        ok, _ = line.checked(errors)
        assert ok != bool(errors)
        assert ok or (errors[0].startswith(f"{key}: ") and line.error.text().endswith(" is refused")
                      and errors[0].endswith(line.error.text()[1:]))


def test_a_mistake_fixed_in_the_settings_leaves_the_status_bar(qtbot, db_file: Path, config: Path,
                                                                tmp_path: Path) -> None:
    config.write_text(MINE.replace("system_interval_s = 1 ", "system_interval_s = 0 ")
                      .replace('future_option = "kept"     # not llmmon\'s yet\n', ""), encoding="utf-8")
    runtime = Runtime.create(db_file)
    try:
        window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(window)
        window.show()
        assert window.config_label.isVisible() and "1 mistake" in window.config_label.text()
        dialog = window.open_settings()
        assert "system_interval_s" in dialog.problems.text() and dialog.polling.system.text() == "1"
        type_into(qtbot, dialog.polling.system, "2")
        click_save(qtbot, dialog)
        assert not window.config_label.isVisible() and runtime.problems == []
        assert "system_interval_s = 2 " in config.read_text(encoding="utf-8")
    finally:
        runtime.stop()
