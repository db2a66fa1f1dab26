"""The Alerts tab, the rule editor, its way to the notification settings and the tray icon, under offscreen Qt with
a real runtime (real SQLite file, the user's rule file in the test's config dir)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QSystemTrayIcon

from app import secrets
from app.alerts.notify import WEBHOOK_SECRET, DesktopSink, Notifier
from app.alerts.rules import DEFAULT_RULES_PATH, NotifySettings, Rule, parse_rules, user_rules_path
from app.config import Settings
from app.records import Sample, labels_of
from app.runtime import Runtime
from app.summary import summarize
from widgets.alerts_panel import AlertsPanel
from widgets.header_strip import HeaderStrip
from widgets.rule_editor import RuleEditor
from widgets.theme import SEVERITY_COLOURS
from widgets.tray import AlertTray, TraySink, badge_icon
from widgets.tray_menu import install_tray


@pytest.fixture
def runtime(db_file: Path):
    rules = user_rules_path()
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(DEFAULT_RULES_PATH.read_text() + '\n[[rule]]\nname = "mine"\nmetric = "x"\nthreshold = "high"\n')
    rt = Runtime.create(db_file, Settings())
    yield rt
    rt.store.close()


def heat_gpu(rt: Runtime, now: float, celsius: float = 91.0) -> None:
    rt.hub.publish([Sample("gpu_temperature_celsius", celsius, now - 90 + i, labels_of(gpu="0")) for i in range(91)])
    for t in range(-90, 1, 10):
        rt.alerts.evaluate(now + t)


def test_the_tab_shows_rule_file_problems_firing_alerts_and_history(qtbot, runtime) -> None:
    now = time.time()
    panel = AlertsPanel(runtime)
    qtbot.addWidget(panel)
    threshold_line = len(DEFAULT_RULES_PATH.read_text().splitlines()) + 5  # the appended rule's 'threshold ='
    assert f"alert_rules.toml line {threshold_line}: rule 'mine': threshold must be a number" in panel.problems.text()
    assert panel.rules.rowCount() == len(parse_rules(DEFAULT_RULES_PATH.read_text()).rules)
    heat_gpu(runtime, now)
    runtime.store.flush()
    panel.refresh(now)
    assert [panel.active.item(0, c).text() for c in (0, 1, 2, 3, 5)] == [
        "critical", "GPU too hot", "GPU 0", "firing", "91 °C"]
    # the sentence of the shipped rule, with how long it has held (hot since -90 s, fired at -30 s)
    assert panel.active.item(0, 6).text() == "GPU 0 is at 91 °C, above 85 °C, for 1 min 30 s"
    history = [panel.history.item(r, 3).text() for r in range(panel.history.rowCount())]
    assert history == ["firing", "pending"]  # newest first
    panel.state_filter.setCurrentText("pending")
    assert panel.history.rowCount() == 1

    panel.active.selectRow(0)
    panel.ack_button.click()
    assert runtime.alerts.alerts()[0].acknowledged
    assert "acknowledged" in panel.active.item(0, 3).text()
    panel.snooze(3600)
    assert "snoozed" in panel.active.item(0, 3).text()
    runtime.store.flush()
    panel.state_filter.setCurrentIndex(0)
    panel.refresh(time.time())
    states = {panel.history.item(r, 3).text() for r in range(panel.history.rowCount())}
    assert {"acknowledged", "snoozed"} <= states
    panel.grab().save(str(Path(runtime.store.path).parent / "alerts_tab.png"))


def test_an_alert_back_within_its_cooldown_shows_firing_and_counts_without_a_second_notification(
        qtbot, runtime) -> None:
    now = time.time()
    panel = AlertsPanel(runtime)
    header = HeaderStrip()
    qtbot.addWidget(panel)
    qtbot.addWidget(header)
    sent = runtime.alerts.notifier.sent

    def shown(at: float) -> tuple[str, str]:
        panel.refresh(at)
        header.show_summary(summarize(runtime.hub.buffers, runtime.hub.health, at, runtime.alerts.worst_firing()))
        state = panel.active.item(0, 3).text() if panel.active.rowCount() else "none"
        return state, header.tiles["alerts"].value.text()

    heat_gpu(runtime, now)                      # fires at -30 s (the shipped gpu_hot: for 1m, cooldown 15m)
    assert shown(now) == ("firing", "1")
    runtime.hub.publish([Sample("gpu_temperature_celsius", 60.0, now + 10, labels_of(gpu="0"))])
    runtime.alerts.evaluate(now + 10)
    assert shown(now + 10) == ("none", "0")
    heat_gpu(runtime, now + 100)                # hot again for 90 s, 2 minutes after it fired
    assert shown(now + 100) == ("firing", "1")  # firing (not "pending") though the cooldown runs
    assert [n.title for n in sent] == ["CRITICAL: GPU too hot", "Resolved: GPU too hot"]  # no second one


def fill(editor: RuleEditor, **fields: str) -> None:
    for name, text in fields.items():
        widget = getattr(editor, name)
        widget.setCurrentText(text) if hasattr(widget, "setCurrentText") else widget.setText(text)


def test_rule_editor_tests_against_the_last_hour_and_saves_to_the_file(qtbot, runtime, monkeypatch) -> None:
    now = time.time()
    # An hour of CPU with three 2-minute bursts above 90 %.
    bursts = [(600, 720), (1800, 1920), (3000, 3120)]
    runtime.hub.publish([Sample("system_cpu_percent", 95.0 if any(a <= i < b for a, b in bursts) else 20.0,
                                now - 3600 + i) for i in range(3600)])
    panel = AlertsPanel(runtime, clock=lambda: now)
    qtbot.addWidget(panel)

    seen: dict[str, str] = {}

    def answer(editor: RuleEditor) -> int:
        fill(editor, name_edit="cpu_bursts", title_edit="CPU bursts", metric_box="system_cpu_percent",
             threshold_edit="80", for_edit="1m", cooldown_edit="0s", severity_box="info")
        editor.test_button.click()
        seen["tested"] = editor.test_result.text()
        fill(editor, threshold_edit="eighty")
        editor.accept()
        seen["error"] = editor.error.text()
        assert editor.result() != QDialog.DialogCode.Accepted  # stays open on a mistake
        fill(editor, threshold_edit="80")
        editor.accept()
        return editor.result()

    monkeypatch.setattr(RuleEditor, "exec", answer)
    panel.new_button.click()
    assert seen["tested"] == "Would have fired 3 times in the last 1h (1 series checked)."
    assert seen["error"] == "threshold: 'eighty' is not a number"
    saved = parse_rules(user_rules_path().read_text())
    assert saved.rules[-1] == Rule("cpu_bursts", "system_cpu_percent", ">", 80.0, for_s=60, cooldown=0,
                                   severity="info", title="CPU bursts")
    assert "cpu_bursts" in {r.name for r in runtime.alerts.rules}
    assert panel.rules.item(panel.rules.rowCount() - 1, 1).text() == "CPU bursts"

    panel.rules.selectRow(panel.rules.rowCount() - 1)
    panel.toggle_button.click()
    assert not parse_rules(user_rules_path().read_text()).rules[-1].enabled
    assert panel.rules.item(panel.rules.rowCount() - 1, 0).text() == "—"
    assert len(saved.problems) == 1  # the user's broken rule is still in the file, untouched
    assert 'threshold = "high"' in user_rules_path().read_text()


def test_the_tabs_notification_settings_set_the_webhook_with_the_url_in_the_keyring_only(
        qtbot, runtime, memory_keyring, tmp_path: Path) -> None:
    """The Alerts tab sends the user to the one place notifications are set (Settings →
    Notifications); what is saved there shows in the tab's line of sinks at once."""
    from widgets.main_window import MainWindow
    from widgets.settings_dialog import SettingsDialog

    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    panel = window.panel(AlertsPanel)
    assert "webhook: off" in panel.sinks.text()
    qtbot.mouseClick(panel.notification_settings_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(SettingsDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.sidebar.currentItem().text() == "Notifications"
    url = "https://hooks.example.test/services/T1/B2/very-secret-token"
    dialog.notifications.format.setCurrentIndex(dialog.notifications.format.findData("slack"))
    dialog.notifications.url.setText(url)
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Save), Qt.MouseButton.LeftButton)
    assert not dialog.isVisible(), dialog.message.text()
    assert secrets.get_secret(WEBHOOK_SECRET) == url
    assert runtime.alerts.rule_file.notifications.webhook == "slack"
    assert "webhook: ✓ webhook (slack) set in the keyring" in panel.sinks.text()
    assert "very-secret-token" not in user_rules_path().read_text()


def badge_colour(tray: AlertTray) -> str:
    image = tray.icon().pixmap(64, 64).toImage()
    return image.pixelColor(int(64 * 0.71), int(64 * 0.85)).name().upper()


def test_tray_badge_follows_the_worst_firing_alert_and_shows_balloons(qtbot, runtime) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    assert install_tray(app, None, runtime) is None  # offscreen: no system tray
    assert app.quitOnLastWindowClosed()  # so closing the window quits, as without llmmon's tray
    tray = AlertTray(runtime.alerts)
    assert badge_colour(tray) != SEVERITY_COLOURS["critical"].upper()
    assert tray.toolTip() == "llmmon: no alerts firing"
    now = time.time()
    runtime.hub.publish([Sample("system_disk_percent", 90.0, now - 100, labels_of(mount="/"))])
    runtime.alerts.evaluate(now - 100)
    tray.refresh()
    assert badge_colour(tray) == SEVERITY_COLOURS["warning"].upper()
    heat_gpu(runtime, now)
    tray.refresh()
    assert badge_colour(tray) == SEVERITY_COLOURS["critical"].upper()
    assert tray.toolTip() == "llmmon: 2 alerts firing (worst: critical)"
    runtime.alerts.acknowledge("gpu_hot", labels_of(gpu="0"))
    tray.refresh()
    assert badge_colour(tray) == SEVERITY_COLOURS["warning"].upper()

    # No notification daemon: the notifier falls back to the tray balloon, from its own thread.
    notifier = Notifier([DesktopSink("unix:path=/nonexistent/bus"), TraySink(tray, available=lambda: True)],
                        NotifySettings())
    notifier.start()
    runtime.alerts.add_listener(notifier.submit)
    runtime.hub.publish([Sample("system_memory_percent", 97.0, now + 200 - i, ()) for i in range(200, -1, -1)])
    for t in range(0, 200, 10):
        runtime.alerts.evaluate(now + t)
    qtbot.waitUntil(lambda: tray.messages_shown == 2, timeout=5000)
    notifier.stop()
    # The tray sits in a reference cycle (engine → notifier → sink → tray): delete it now rather
    # than let the garbage collector do it in the middle of a later test's event loop.
    shiboken6.delete(tray)
    assert [d.delivered for d in notifier.deliveries] == [("tray",), ("tray",)]
    # The GPU's samples stopped (its alert resolves), memory stayed above 90 % for 3 minutes.
    assert [d.notification.title for d in notifier.deliveries] == ["Resolved: GPU too hot",
                                                                   "CRITICAL: Memory above 90 %"]
    assert badge_icon("info", 12) is not None and not QSystemTrayIcon.isSystemTrayAvailable()
