"""The Alerts tab: what is firing or pending now (acknowledge, snooze), the history of alert
transitions with filters, the rules (new, edit, enable/disable, delete) and where
notifications go. Problems in the rule file are shown at the top with their line numbers."""
from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.alerts.engine import AlertEngine, AlertView
from app.alerts.history import HistoryFilter, alert_history, last_event_id
from app.alerts.rule_file import replace_rule
from app.alerts.rules import DEFAULT_RULES_PATH, Rule
from app.alerts.sentence import series_text, value_text, with_names
from app.runtime import Runtime
from widgets.panel import Panel, read_only_table
from widgets.rule_editor import RuleEditor
from widgets.theme import BAD, SEVERITY_COLOURS

log = logging.getLogger(__name__)

SNOOZE_CHOICES = (("15 minutes", 900), ("1 hour", 3600), ("8 hours", 8 * 3600), ("1 day", 86400))
PERIODS = (("Last hour", 3600.0), ("Last 24 hours", 86400.0), ("This session", None), ("Everything", None))
SINK_STATUS_EVERY_S = 10.0


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    fmt = "%H:%M:%S" if now - ts < 20 * 3600 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(ts))


def _value(rule: Rule | None, value: float | None) -> str:
    """The value with the unit of the rule's metric (a bare number for a rule that is gone)."""
    if value is None:
        return ""
    return value_text(rule, value) if rule is not None else f"{value:.4g}"


MESSAGE_COLUMN = 6   # of the "Firing and pending" table


def _fill(table: QTableWidget, rows: list[list[str]], severity_column: int | None = None) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            if c == severity_column and text in SEVERITY_COLOURS:
                item.setForeground(QColor(SEVERITY_COLOURS[text]))
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            table.setItem(r, c, item)


class AlertsPanel(Panel):
    """The Alerts tab (see the module docstring)."""

    title = "Alerts"
    notificationSettingsRequested = Signal()  # the user asked for the settings' Notifications page

    def __init__(self, runtime: Runtime, parent: QWidget | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(runtime, parent)
        self.engine = runtime.alerts
        self.clock = clock
        self._active: list[AlertView] = []
        self._problems: list[str] = []
        self._history_key: tuple[object, ...] | None = None
        self._sinks_checked = float("-inf")

        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems.setStyleSheet(f"color: {BAD}")
        self.sinks = QLabel()
        self.sinks.setWordWrap(True)
        # The webhook URL, its format and the other sinks are set in one place: the settings window.
        button = self.notification_settings_button = QPushButton("Notification settings…")
        button.setToolTip("Desktop, tray and webhook notifications (Settings → Notifications)")
        button.clicked.connect(self.notificationSettingsRequested)
        sinks_row = QHBoxLayout()
        sinks_row.addWidget(self.sinks, 1)
        sinks_row.addWidget(self.notification_settings_button)

        # Active alerts
        self.active = read_only_table(["Severity", "Alert", "Series", "State", "Since", "Value", "Message"])
        self.ack_button = QPushButton("Acknowledge")
        self.ack_button.setToolTip("Mark as seen: it stays listed but no longer colours the tray icon")
        self.ack_button.clicked.connect(self.acknowledge)
        self.snooze_button = QToolButton()
        self.snooze_button.setText("Snooze")
        self.snooze_button.setToolTip("No notifications from this alert for a while")
        self.snooze_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        snooze_menu = QMenu(self.snooze_button)
        for label, seconds in SNOOZE_CHOICES:
            snooze_menu.addAction(label, functools.partial(self.snooze, seconds))
        self.snooze_button.setMenu(snooze_menu)
        self.active_empty = QLabel("No alert is firing or pending.")
        active_buttons = QHBoxLayout()
        active_buttons.addWidget(self.active_empty)
        active_buttons.addStretch(1)
        active_buttons.addWidget(self.ack_button)
        active_buttons.addWidget(self.snooze_button)
        active_box = QGroupBox("Firing and pending")
        active_layout = QVBoxLayout(active_box)
        active_layout.addWidget(self.active)
        active_layout.addLayout(active_buttons)

        # History
        self.rule_filter = QComboBox()
        self.severity_filter = QComboBox()
        self.severity_filter.addItems(["Any severity", "critical", "warning", "info"])
        self.state_filter = QComboBox()
        self.state_filter.addItems(["Any state", "firing", "resolved", "pending", "acknowledged", "snoozed"])
        self.period_filter = QComboBox()
        self.period_filter.addItems([label for label, _ in PERIODS])
        self.period_filter.setCurrentIndex(1)
        filters = QHBoxLayout()
        for w in (QLabel("Show"), self.rule_filter, self.severity_filter, self.state_filter, self.period_filter):
            filters.addWidget(w)
            if isinstance(w, QComboBox):
                w.currentIndexChanged.connect(lambda _: self.refresh_history(force=True))
        filters.addStretch(1)
        self.history = read_only_table(["Time", "Alert", "Severity", "State", "Series", "Value", "Message"])
        history_tab = QWidget()
        history_layout = QVBoxLayout(history_tab)
        history_layout.addLayout(filters)
        history_layout.addWidget(self.history)

        # Rules
        self.rules = read_only_table(["On", "Rule", "Metric", "Series", "Condition", "Severity"])
        self.rules.doubleClicked.connect(lambda _: self.edit_rule())
        self.rule_path = QLabel()
        self.rule_path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rule_buttons = QHBoxLayout()
        self.new_button = QPushButton("New…")
        self.edit_button = QPushButton("Edit…")
        self.toggle_button = QPushButton("Enable / disable")
        self.delete_button = QPushButton("Delete")
        self.reload_button = QPushButton("Reload file")
        for button, slot in ((self.new_button, self.new_rule), (self.edit_button, self.edit_rule),
                             (self.toggle_button, self.toggle_rule), (self.delete_button, self.delete_rule),
                             (self.reload_button, self.reload)):
            button.clicked.connect(slot)
            rule_buttons.addWidget(button)
        rule_buttons.addStretch(1)
        rules_tab = QWidget()
        rules_layout = QVBoxLayout(rules_tab)
        rules_layout.addWidget(self.rules)
        rules_layout.addLayout(rule_buttons)
        rules_layout.addWidget(self.rule_path)

        self.lower_tabs = QTabWidget()  # not self.lower: that is QWidget.lower()
        self.lower_tabs.addTab(history_tab, "History")
        self.lower_tabs.addTab(rules_tab, "Rules")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(active_box)
        splitter.addWidget(self.lower_tabs)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.problems)
        layout.addLayout(sinks_row)
        layout.addWidget(splitter, 1)

        if self.engine is None:  # a runtime built without alerting (some tests)
            self.setEnabled(False)
            return
        self.show_rules()

    @property
    def _engine(self) -> AlertEngine:
        """The runtime's engine; without one the panel is disabled, so no action reaches here."""
        if self.engine is None:
            raise RuntimeError("the alerts panel has no alert engine")
        return self.engine

    # ------------------------------------------------------------------ refresh
    def refresh(self, now: float) -> None:
        if self.engine is None:
            return
        self.refresh_active(now)
        self.refresh_history()
        if self.engine.problems != self._problems:  # a rule started or stopped failing
            self.show_problems()
        if now - self._sinks_checked >= SINK_STATUS_EVERY_S:
            self._sinks_checked = now
            self.show_sinks()

    def refresh_active(self, now: float) -> None:
        alerts = self._engine.alerts()
        if alerts == self._active:
            return
        selected = self.selected_alert()
        self._active = alerts
        rules = {r.name: r for r in self._engine.rules}
        _fill(self.active, [[a.severity, a.title, series_text(with_names(a.labels, self.runtime.display_name)),
                             a.state + (" (acknowledged)" if a.acknowledged else "")
                             + (" (snoozed)" if a.snoozed_until and a.snoozed_until > now else ""),
                             _when(a.since, now), _value(rules.get(a.rule), a.value), a.message]
                            for a in alerts], 0)
        for row, a in enumerate(alerts):
            item = self.active.item(row, MESSAGE_COLUMN)
            if a.hint and item is not None:  # what to do, where the sentence is
                item.setToolTip(f"{a.message}\n\nWhat to do: {a.hint}")
            if selected is not None and a.key == selected.key:
                self.active.selectRow(row)
        self.active_empty.setVisible(not alerts)

    def history_filter(self, now: float) -> HistoryFilter:
        period = PERIODS[self.period_filter.currentIndex()]
        session = self.runtime.store.session_id if period[0] == "This session" else None
        return HistoryFilter(
            since=now - period[1] if period[1] else None,
            rule=self.rule_filter.currentData() or "",
            severity="" if self.severity_filter.currentIndex() == 0 else self.severity_filter.currentText(),
            state="" if self.state_filter.currentIndex() == 0 else self.state_filter.currentText(),
            session_id=session)

    def refresh_history(self, force: bool = False) -> None:
        now = self.clock()
        try:
            conn = self.db.get()
            newest = last_event_id(conn)
            where = self.history_filter(now)
            key = (newest, where.rule, where.severity, where.state, where.session_id, self.period_filter.currentIndex())
            if key == self._history_key and not force:
                return
            self._history_key = key
            events = alert_history(conn, where)
        except sqlite3.Error as exc:  # locked or missing file: say so, try again next tick
            log.warning("alert history: %s", exc)
            self.db.reset()
            return
        rules = {r.name: r for r in self._engine.rules}
        _fill(self.history, [[_when(e.ts, now), rules[e.rule].label if e.rule in rules else e.rule, e.severity,
                              e.state, series_text(with_names(e.labels, self.runtime.display_name)),
                              _value(rules.get(e.rule), e.value), e.message]
                             for e in events], 2)

    def show_sinks(self) -> None:
        notifier = self._engine.notifier
        if notifier is None:
            self.sinks.setText("Notifications: none configured")
            return
        parts = []
        for sink in notifier.sinks:
            if not notifier.enabled(sink):
                parts.append(f"{sink.kind}: off")
                continue
            available, why = sink.status()
            parts.append(f"{sink.kind}: {'✓' if available else '✗'} {why}")
        if not any(s.kind == "tray" for s in notifier.sinks):
            parts.append("tray: ✗ no system tray on this desktop")
        self.sinks.setText("Notifications — " + " · ".join(parts))

    def show_problems(self) -> None:
        """The rule file's problems and the rules that fail to evaluate (the engine's problems)."""
        problems = self._engine.problems
        self._problems = problems
        self.problems.setText(
            (f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with the alert rules "
             "(those rules are not evaluated):\n" + "\n".join(problems)) if problems else "")
        self.problems.setVisible(bool(problems))

    def show_rules(self) -> None:
        self.show_problems()
        rules = self._engine.rules
        _fill(self.rules, [["✓" if r.enabled else "—", r.label, r.metric, r.match_text() or "all",
                            r.condition_text(), r.severity] for r in rules], 5)
        current = self.rule_filter.currentData()
        self.rule_filter.blockSignals(True)
        self.rule_filter.clear()
        self.rule_filter.addItem("Any rule", "")
        for r in rules:
            self.rule_filter.addItem(r.label, r.name)
        self.rule_filter.setCurrentIndex(max(0, self.rule_filter.findData(current)))
        self.rule_filter.blockSignals(False)
        path = self._engine.rule_file.path
        editable = path is not None and path != DEFAULT_RULES_PATH
        self.rule_path.setText(f"Rule file: {path}" + ("" if editable else " (read-only: the shipped defaults)"))
        for button in (self.new_button, self.edit_button, self.toggle_button, self.delete_button):
            button.setEnabled(editable)
        self.show_sinks()

    # ------------------------------------------------------------------ alert actions
    def selected_alert(self) -> AlertView | None:
        rows = self.active.selectionModel().selectedRows() if self.active.selectionModel() else []
        return self._active[rows[0].row()] if rows and rows[0].row() < len(self._active) else None

    def acknowledge(self) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self._engine.acknowledge(alert.rule, alert.labels)
            self.refresh_active(self.clock())

    def snooze(self, seconds: float) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self._engine.snooze(alert.rule, alert.labels, seconds)
            self.refresh_active(self.clock())

    # ------------------------------------------------------------------ rule actions
    def selected_rule(self) -> Rule | None:
        rows = self.rules.selectionModel().selectedRows()
        rules = self._engine.rules
        return rules[rows[0].row()] if rows and rows[0].row() < len(rules) else None

    def _rewrite(self, name: str, rule: Rule | None) -> None:
        """Change one rule in the user's file (comments and other rules untouched), reload."""
        self._rewrite_file(lambda text: replace_rule(text, name, rule))

    def _rewrite_file(self, change: Callable[[str], str]) -> None:
        path = self._engine.rule_file.path
        if path is None:  # the shipped defaults are not a file the user can edit
            return
        try:
            path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
        except OSError as exc:
            QMessageBox.warning(self, "Alert rules", f"Cannot write {path}: {exc}")
            return
        self.reload()

    def open_editor(self, rule: Rule | None) -> Rule | None:
        taken = {r.name for r in self._engine.rules} - ({rule.name} if rule else set())
        dialog = RuleEditor(self.runtime.hub.buffers, rule, taken, self.clock, self)
        return dialog.result_rule if dialog.exec() else None

    def new_rule(self) -> None:
        rule = self.open_editor(None)
        if rule is not None:
            self._rewrite(rule.name, rule)

    def edit_rule(self) -> None:
        old = self.selected_rule()
        if old is None or not self.edit_button.isEnabled():
            return
        rule = self.open_editor(old)
        if rule is not None:
            if rule.name != old.name:
                self._rewrite_file(lambda text: replace_rule(replace_rule(text, old.name, None), rule.name, rule))
            else:
                self._rewrite(old.name, rule)

    def toggle_rule(self) -> None:
        rule = self.selected_rule()
        if rule is not None:
            self._rewrite(rule.name, replace(rule, enabled=not rule.enabled))

    def delete_rule(self) -> None:
        rule = self.selected_rule()
        if rule is not None and QMessageBox.question(self, "Delete rule", f"Delete the rule “{rule.label}”?") \
                == QMessageBox.StandardButton.Yes:
            self._rewrite(rule.name, None)

    def reload(self) -> None:
        self._engine.reload()
        self.show_rules()
        self.refresh_history(force=True)
