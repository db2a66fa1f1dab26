"""The settings pages other than Servers (``widgets/settings_servers.py``): Polling, Proxy,
Storage, Appearance, Notifications, Privacy and Desktop.

Each page shows part of :class:`~app.config.Settings` (:meth:`load`) and writes the fields back
(:meth:`store`), refusing a bad value with its reason under the field. Notifications are the
``[notifications]`` table of the alert rule file (where the Alerts tab and the notifier read
them), the webhook URL the keyring entry ``webhook_url``; the Desktop page shows the window's
own "Start minimised" / "Start on login" menu actions, so both places stay one setting.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import cast

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.alerts.notify import WEBHOOK_SECRET, Delivery, Notification, Notifier, Sink
from app.alerts.rules import WEBHOOK_FORMATS, NotifySettings
from app.config import THEMES, Invalid, ProxyRoute, Settings, check_setting
from app.config_edit import Edit
from app.durations import format_duration, parse_duration
from app.proxy.group import KnownServer, plan_routes
from app.secrets import KeyringUnavailable, delete_secret, get_secret, set_secret
from app.server_names import normalise_url
from app.storage.retention import GB, retention_plan
from app.storage.sessions import list_sessions
from app.storage.store import Store
from widgets.background import run_in_thread
from widgets.sessions_panel import retention_summary
from widgets.settings_fields import (
    ERROR_COLOUR,
    ERROR_STYLE,
    CheckedLine,
    add_checked,
    error_label,
    note,
    refusal,
    shown,
)
from widgets.settings_servers import KINDS
from widgets.theme import THEME_ENV


class PollingPage(QWidget):
    title = "Polling"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.system = CheckedLine("general.system_interval_s", placeholder="1")
        self.server = CheckedLine("general.server_interval_s", placeholder="1")
        form = QFormLayout()
        add_checked(form, "This computer (CPU, memory, GPU) every", self.system, "seconds")
        add_checked(form, "Each LLM server every", self.server,
                    "seconds; a server that is down is retried less often, up to every 10 s")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note("Shorter intervals show more detail and cost more CPU. Applied when you save."))
        layout.addStretch(1)

    def load(self, settings: Settings) -> None:
        self.system.setText(shown(settings.system_interval_s))
        self.server.setText(shown(settings.server_interval_s))

    def store(self, settings: Settings, errors: list[str]) -> None:
        for line, key in ((self.system, "system_interval_s"), (self.server, "server_interval_s")):
            ok, value = line.checked(errors)
            if ok:
                setattr(settings, key, value)


class ProxyPage(QWidget):
    """The proxy's switch and options, and its routes (each with its own on/off)."""

    title = "Proxy"
    ROUTE_COLUMNS = ["On", "Name", "Upstream", "Listen", "Kind"]

    def __init__(self, found: Callable[[], Iterable[KnownServer]] = tuple, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.found = found  # the servers discovery found: they get automatic routes too
        self.loaded: list[ProxyRoute] = []
        self._edits: list[Edit[ProxyRoute]] = []
        self.enabled = QCheckBox("Run the metering proxy")
        self.include_usage = QCheckBox("Ask OpenAI-compatible servers to report token usage in streams")
        self.include_usage.setToolTip("Adds stream_options.include_usage; the client still receives the "
                                      "stream it asked for")
        self.table = QTableWidget(0, len(self.ROUTE_COLUMNS))
        self.table.setHorizontalHeaderLabels(self.ROUTE_COLUMNS)
        for column, tip in ((2, "The server's URL: where the proxy forwards to"),
                            (3, "Where clients connect instead of the server")):
            header_item = self.table.horizontalHeaderItem(column)
            if header_item is not None:
                header_item.setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(120)
        self.add_button = QPushButton("Add route")
        self.add_button.clicked.connect(lambda: self._add_row(None, ProxyRoute("", 0)))
        self.remove_button = QPushButton("Remove route")
        self.remove_button.clicked.connect(self._remove_row)
        self.remove_button.setEnabled(False)  # until a route is selected: it removes the selected ones
        self.table.itemSelectionChanged.connect(
            lambda: self.remove_button.setEnabled(bool(self.table.selectionModel().selectedRows())))
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        self.automatic = note()
        self.errors = error_label()
        layout = QVBoxLayout(self)
        layout.addWidget(self.enabled)
        layout.addWidget(self.include_usage)
        layout.addWidget(QLabel("Routes"))
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.errors)
        layout.addWidget(self.automatic)
        layout.addWidget(note("Listen is a port on 127.0.0.1 (8001), or HOST:PORT to accept other machines "
                              "(0.0.0.0:8001). Saving restarts the running proxies with the new routes; "
                              "requests in flight are recorded as cancelled."))
        layout.addStretch(1)

    def load(self, settings: Settings) -> None:
        proxy = settings.proxy
        self.enabled.setChecked(proxy.enabled)
        self.include_usage.setChecked(proxy.include_usage)
        self.loaded = list(proxy.routes)
        self.table.setRowCount(0)
        for route in proxy.routes:
            self._add_row(route, route)
        listed = {normalise_url(r.upstream) for r in proxy.routes}
        automatic = [r for r in plan_routes(settings, self.found(), free=lambda host, port: True)
                     if normalise_url(r.upstream) not in listed]
        self.automatic.setText(
            "Every other server llmmon knows gets its own proxy on its port + 1 (the next free port when "
            "that one is taken)" + (": " + "; ".join(f"{r.upstream} behind 127.0.0.1:{r.listen_port}"
                                                     for r in automatic) if automatic else "") + ".")

    def _add_row(self, before: ProxyRoute | None, route: ProxyRoute) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        on = QTableWidgetItem()
        on.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        on.setCheckState(Qt.CheckState.Checked if route.enabled else Qt.CheckState.Unchecked)
        on.setData(Qt.ItemDataRole.UserRole, self.loaded.index(before) if before is not None else -1)
        self.table.setItem(row, 0, on)
        listen = "" if not route.listen_port else str(route.listen_port) if route.listen_host == "127.0.0.1" \
            else f"{route.listen_host}:{route.listen_port}"
        for column, text in ((1, route.name), (2, route.upstream), (3, listen)):
            self.table.setItem(row, column, QTableWidgetItem(text))
        kind = QComboBox()
        for key, label in KINDS:
            kind.addItem(label, key)
        kind.setCurrentIndex(max(0, kind.findData(route.kind)))
        self.table.setCellWidget(row, 4, kind)
        if before is None:
            self.table.selectRow(row)
            self.table.setCurrentCell(row, 2)

    def _remove_row(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            self.table.removeRow(row)

    def _cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text().strip() if item is not None else ""

    def store(self, settings: Settings, errors: list[str]) -> None:
        proxy = settings.proxy
        proxy.enabled = self.enabled.isChecked()
        proxy.include_usage = self.include_usage.isChecked()
        refused: list[str] = []
        self._edits = []
        for row in range(self.table.rowCount()):
            values: dict[str, object] = {}
            for column, key in ((2, "upstream"), (3, "listen")):
                typed = self._cell(row, column)
                item = self.table.item(row, column)
                try:
                    values[key] = check_setting(f"proxy.routes.{key}", int(typed) if typed.isdigit() else typed)
                    if item is not None:
                        item.setBackground(self.table.palette().base())
                except Invalid as exc:
                    refused.append(refusal(f"Route {row + 1}, {self.ROUTE_COLUMNS[column]}", exc, typed))
                    if item is None:
                        item = QTableWidgetItem("")
                        self.table.setItem(row, column, item)
                    item.setBackground(_error_brush())
            if len(values) < 2:
                continue
            host, port = cast(tuple[str, int], values["listen"])
            on = self.table.item(row, 0)
            kind = self.table.cellWidget(row, 4)
            route = ProxyRoute(upstream=str(values["upstream"]), listen_port=port, listen_host=host,
                               kind=str(kind.currentData()) if isinstance(kind, QComboBox) else "auto",
                               name=self._cell(row, 1),
                               enabled=on is not None and on.checkState() == Qt.CheckState.Checked)
            index = on.data(Qt.ItemDataRole.UserRole) if on is not None else -1
            self._edits.append(Edit(self.loaded[index] if isinstance(index, int) and index >= 0 else None, route))
        self.errors.setText("\n".join(refused))
        self.errors.setVisible(bool(refused))
        errors.extend(refused)
        proxy.routes = [edit.after for edit in self._edits]

    def edits(self) -> list[Edit[ProxyRoute]]:
        """How the routes were edited (after :meth:`store`)."""
        return self._edits


def _error_brush() -> QBrush:
    """The background of a refused cell."""
    colour = QColor(ERROR_COLOUR)
    colour.setAlpha(90)
    return QBrush(colour)


class StoragePage(QWidget):
    """Retention, with a preview of what the next clean-up would remove under the typed limits."""

    title = "Storage"
    previewed = Signal(object)  # the preview text, or the exception, from the worker thread

    def __init__(self, store: Store | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db = store
        self.days = CheckedLine("general.retention_days", placeholder="30, or never")
        self.gb = CheckedLine("general.retention_gb", placeholder="5, or never")
        form = QFormLayout()
        add_checked(form, "Keep data for", self.days, "days (never: keep everything)")
        add_checked(form, "Keep the database under", self.gb, "GB (10⁹ bytes; never: no size limit)")
        self.preview = QLabel()
        self.preview.setWordWrap(True)
        self.timer = QTimer(self)  # one preview per pause in typing, not per key
        self.timer.setSingleShot(True)
        self.timer.setInterval(400)
        self.timer.timeout.connect(self.update_preview)
        for line in (self.days, self.gb):
            line.textChanged.connect(lambda _: self.timer.start())
        self.previewed.connect(self._show_preview)
        box = QGroupBox("With these limits")
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.preview)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box)
        layout.addWidget(note("Old data is deleted in the background. Saving runs a clean-up at once with the "
                              "new limits; the Sessions tab shows the same preview."))
        layout.addStretch(1)

    def load(self, settings: Settings) -> None:
        self.days.setText(shown(settings.retention_days))
        self.gb.setText(shown(settings.retention_gb))

    def store(self, settings: Settings, errors: list[str]) -> None:
        for line, key in ((self.days, "retention_days"), (self.gb, "retention_gb")):
            ok, value = line.checked(errors)
            if ok:
                setattr(settings, key, value)

    def update_preview(self) -> None:
        """Read the sessions and the plan for the typed limits on a worker thread."""
        store = self.db
        if store is None:
            self.preview.setText("No database is open.")
            return
        errors: list[str] = []
        days_ok, days = self.days.checked(errors)
        gb_ok, gb = self.gb.checked(errors)
        if not (days_ok and gb_ok):
            self.preview.setText("Type valid limits to see what they would remove.")
            return
        keep_days = float(days) if isinstance(days, float) else None
        max_bytes = int(gb * GB) if isinstance(gb, float) else None

        def work() -> str:
            now = time.time()
            conn = store.reader()
            try:
                return retention_summary(retention_plan(conn, keep_days, max_bytes, now), list_sessions(conn, now))
            finally:
                conn.close()
        self.preview.setText("Reading the database…")
        run_in_thread("llmmon-retention-preview", work, self.previewed)

    def _show_preview(self, result: object) -> None:
        self.preview.setText(str(result) if isinstance(result, str) else f"Cannot read the database: {result}")

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's naming)
        super().showEvent(event)
        self.update_preview()


class AppearancePage(QWidget):
    title = "Appearance"
    LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Colours"))
        self.buttons: dict[str, QRadioButton] = {}
        for theme in THEMES:
            button = QRadioButton(self.LABELS[theme])
            self.group.addButton(button)
            self.buttons[theme] = button
            layout.addWidget(button)
        forced = os.environ.get(THEME_ENV, "").lower()
        layout.addWidget(note(f"{THEME_ENV}={forced} is set for this run and wins over this choice."
                              if forced in ("light", "dark") else "Applied to the window and charts when you save."))
        layout.addStretch(1)

    def load(self, settings: Settings) -> None:
        self.buttons.get(settings.theme, self.buttons["system"]).setChecked(True)

    def store(self, settings: Settings, errors: list[str]) -> None:
        settings.theme = next(theme for theme, button in self.buttons.items() if button.isChecked())


class NotificationsPage(QWidget):
    """Where alert notifications go: the ``[notifications]`` table of the rule file, and the
    webhook URL in the keyring."""

    title = "Notifications"
    test_done = Signal(object)  # a Delivery, or the exception, from the test thread
    FORMAT_LABELS = {"off": "Off", "json": "Generic JSON", "slack": "Slack-compatible"}

    def __init__(self, keyring: tuple[bool, str], notifier: Notifier | None, rule_file: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.keyring_ok, why = keyring
        self.notifier = notifier
        self.desktop = QCheckBox("Desktop notifications (D-Bus)")
        self.tray = QCheckBox("Tray balloon when desktop notifications are not available")
        self.group_s = CheckedLine("notifications.group_seconds", check=parse_duration, placeholder="10s")
        self.format = QComboBox()
        for key in WEBHOOK_FORMATS:
            self.format.addItem(self.FORMAT_LABELS[key], key)
        self.url = CheckedLine("webhook URL", check=_webhook_url)
        self.url.setEchoMode(QLineEdit.EchoMode.Password)  # a webhook URL is a credential
        self.url.setPlaceholderText("https://hooks.slack.com/services/… (kept in the OS keyring)")
        self.url_state = QLabel()
        self.url_state.setWordWrap(True)
        self.remove_url = QPushButton("Remove stored URL")
        self.remove_url.clicked.connect(self._remove_url)
        self.forget_url = False
        self.typed_url = ""
        self.loaded = NotifySettings()
        if not self.keyring_ok:
            self.url.setEnabled(False)
            self.remove_url.setEnabled(False)
            # ``why`` already says what to install: said once, then what to do after
            self.url_state.setText(f"{why[:1].upper()}{why[1:]}. The webhook cannot be used until then: llmmon "
                                   "never keeps secrets in a plain file. Open Settings again once a keyring "
                                   "is running.")
            self.url_state.setStyleSheet(ERROR_STYLE)
        self.test_button = QPushButton("Send a test notification")
        self.test_button.clicked.connect(self.send_test)
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        self.test_done.connect(self._tested)

        form = QFormLayout()
        form.addRow(self.desktop)
        form.addRow(self.tray)
        add_checked(form, "At most one notification every", self.group_s,
                    "grouped: what happens meanwhile comes in the next one (e.g. 10s, 1m)")
        hook = QGroupBox("Webhook")
        hook_form = QFormLayout(hook)
        hook_form.addRow("Send alerts as", self.format)
        add_checked(hook_form, "New URL", self.url)
        hook_form.addRow(self.url_state)  # a row of its own: a wrapped label beside a button gets clipped
        remove_row = QHBoxLayout()
        remove_row.addWidget(self.remove_url)
        remove_row.addStretch(1)
        hook_form.addRow("", remove_row)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hook)
        layout.addLayout(test_row)
        layout.addWidget(note(f"Kept in {rule_file} ([notifications]), next to the alert rules."))
        layout.addStretch(1)

    def load(self, notify: NotifySettings) -> None:
        self.loaded = notify
        self.desktop.setChecked(notify.desktop)
        self.tray.setChecked(notify.tray)
        self.group_s.setText(format_duration(notify.group_seconds))
        self.format.setCurrentIndex(max(0, self.format.findData(notify.webhook)))
        self._show_url_state()

    def _show_url_state(self) -> None:
        if not self.keyring_ok:
            return
        stored = bool(get_secret(WEBHOOK_SECRET)) and not self.forget_url
        self.url_state.setText("A URL is stored in the OS keyring." if stored else "No URL is stored.")
        self.remove_url.setEnabled(stored)

    def _remove_url(self) -> None:
        self.forget_url = True
        self.url.clear()
        self._show_url_state()

    def store(self, errors: list[str]) -> NotifySettings:
        """The notification settings in the fields (the loaded ones where a field is refused)."""
        ok, group = self.group_s.checked(errors)
        self.typed_url = ""
        if self.url.text().strip():
            url_ok, url = self.url.checked(errors)
            self.typed_url = str(url) if url_ok else ""
        return NotifySettings(desktop=self.desktop.isChecked(), tray=self.tray.isChecked(),
                              webhook=str(self.format.currentData()),
                              group_seconds=float(cast(float, group)) if ok else self.loaded.group_seconds)

    def send_test(self) -> None:
        """Deliver a test notification through the app's own sinks with the switches as set
        here (a URL typed here goes to the keyring first: the webhook sink reads it there)."""
        errors: list[str] = []
        settings = self.store(errors)
        if errors:
            return
        if self.typed_url:
            try:
                set_secret(WEBHOOK_SECRET, self.typed_url)
            except KeyringUnavailable as exc:
                self.url.refuse(str(exc))
                return
            self.url.clear()
            self.forget_url = False
            self._show_url_state()
        sinks: list[Sink] = list(self.notifier.sinks) if self.notifier is not None else []
        tester = Notifier(sinks, settings)
        tester.configure(settings)
        note_ = Notification("llmmon test notification", "If you read this, llmmon's alerts reach you here.",
                             "info", (), time.time())
        self.test_button.setEnabled(False)
        self.test_result.setStyleSheet("")
        self.test_result.setText("Sending…")
        def work() -> tuple[Delivery, list[Sink]]:
            tester.deliver(note_)
            tester.stop()  # returns once every sink has answered
            return tester.deliveries[-1], sinks
        run_in_thread("llmmon-notify-test", work, self.test_done)

    def _tested(self, result: object) -> None:
        self.test_button.setEnabled(True)
        if not isinstance(result, tuple):
            self.test_result.setText(f"The test failed: {result}")
            self.test_result.setStyleSheet(ERROR_STYLE)
            return
        delivery, sinks = result
        reasons = {s.kind: s.status()[1] for s in sinks}
        parts = []
        if delivery.delivered:
            parts.append("Delivered to " + ", ".join(delivery.delivered) + ".")
        if delivery.failed:
            parts.append("Not delivered to " + "; ".join(f"{k} ({reasons.get(k, 'see the log')})"
                                                         for k in delivery.failed) + ".")
        if not parts:
            parts.append("Nothing is switched on to deliver it.")
        self.test_result.setText(" ".join(parts))
        self.test_result.setStyleSheet("" if delivery.delivered and not delivery.failed else ERROR_STYLE)

    def apply_secret(self) -> None:
        """On Save: store the typed URL, or remove the stored one."""
        if self.typed_url:
            set_secret(WEBHOOK_SECRET, self.typed_url)
        elif self.forget_url:
            delete_secret(WEBHOOK_SECRET)


def _webhook_url(value: object) -> str:
    """A webhook URL: written with its scheme, then checked as any URL."""
    if not isinstance(value, str) or not value.strip().startswith(("https://", "http://")):
        raise Invalid("must start with https:// (or http:// for a receiver on this network)")
    return str(check_setting("servers.url", value))


class PrivacyPage(QWidget):
    title = "Privacy"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store_content = QCheckBox("Keep the text of prompts and answers that go through the proxy")
        self.max_chars = CheckedLine("proxy.content_max_chars", placeholder="16384")
        form = QFormLayout()
        form.addRow(self.store_content)
        add_checked(form, "At most", self.max_chars, "characters of each text")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note("Off by default: llmmon records timings and token counts, not what was said. "
                              "When on, the text is kept in the database on this computer only, and goes into "
                              "the requests.csv of a session you export. Requests made before you turn it on "
                              "have no text."))
        layout.addStretch(1)

    def load(self, settings: Settings) -> None:
        self.store_content.setChecked(settings.proxy.store_content)
        self.max_chars.setText(shown(settings.proxy.content_max_chars))

    def store(self, settings: Settings, errors: list[str]) -> None:
        settings.proxy.store_content = self.store_content.isChecked()
        ok, value = self.max_chars.checked(errors)
        if ok and isinstance(value, int):
            settings.proxy.content_max_chars = value


class DesktopPage(QWidget):
    """The window's checkable desktop actions (start minimised, start on login)."""

    title = "Desktop"

    def __init__(self, actions: list[QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.boxes: list[tuple[QAction, QCheckBox]] = []
        layout = QVBoxLayout(self)
        for action in actions:
            box = QCheckBox(action.text().replace("&", ""))
            box.setToolTip(action.statusTip())
            box.setChecked(action.isChecked())
            self.boxes.append((action, box))
            layout.addWidget(box)
            if action.statusTip():
                layout.addWidget(note(action.statusTip()))
        layout.addWidget(note("The same switches are in the File menu. Applied when you save."))
        layout.addStretch(1)

    def apply(self) -> None:
        for action, box in self.boxes:
            if action.isChecked() != box.isChecked():
                action.setChecked(box.isChecked())  # the action saves it (and writes the autostart entry)
