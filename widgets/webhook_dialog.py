"""The webhook settings dialog: the URL goes to the OS keyring (never shown again, never
written to a file); the format (off / generic JSON / Slack-compatible) goes to the rule file."""
from __future__ import annotations

import threading
import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.alerts.notify import WEBHOOK_SECRET, Notification, WebhookSink
from app.alerts.rules import WEBHOOK_FORMATS
from app.secrets import KeyringUnavailable, delete_secret, get_secret, keyring_status, set_secret
from widgets.theme import BAD, emphasis

FORMAT_LABELS = {"off": "Off", "json": "Generic JSON", "slack": "Slack-compatible"}


class WebhookDialog(QDialog):
    """Set, test or remove the webhook. :attr:`format` is the chosen format after Accepted."""

    test_finished = Signal(str)  # from the test thread

    def __init__(self, current_format: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Webhook")
        self.format = current_format
        available, why = keyring_status()
        self.keyring_available = available
        self.format_box = QComboBox()
        for key in WEBHOOK_FORMATS:
            self.format_box.addItem(FORMAT_LABELS[key], key)
        self.format_box.setCurrentIndex(WEBHOOK_FORMATS.index(current_format))
        self.url = QLineEdit()
        self.url.setEchoMode(QLineEdit.EchoMode.Password)  # a webhook URL is a credential
        self.url.setPlaceholderText("https://hooks.slack.com/services/…")
        self.state = QLabel()
        self.state.setWordWrap(True)
        self.remove_button = QPushButton("Remove stored URL")
        self.remove_button.clicked.connect(self.remove)
        self.test_button = QPushButton("Send a test message")
        self.test_button.clicked.connect(self.send_test)
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        self.test_finished.connect(self._test_done)
        if not available:
            self.url.setEnabled(False)
            self.remove_button.setEnabled(False)
            self.test_button.setEnabled(False)
            self.state.setText(f"{why[:1].upper()}{why[1:]}. The webhook cannot be used: llmmon never "
                               "keeps secrets in a plain file.")
            self.state.setStyleSheet(emphasis(BAD))
        else:
            self._show_state()
        form = QFormLayout()
        form.addRow("Send alerts as", self.format_box)
        form.addRow("New URL", self.url)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.remove_button)
        layout.addWidget(self.test_button)
        layout.addWidget(self.test_result)
        layout.addWidget(buttons)
        self.resize(520, self.sizeHint().height())

    def _show_state(self) -> None:
        stored = bool(get_secret(WEBHOOK_SECRET))
        self.state.setText("A URL is stored in the OS keyring." if stored else "No URL is stored yet.")
        self.remove_button.setEnabled(stored)

    def _store_typed_url(self) -> bool:
        url = self.url.text().strip()
        if not url:
            return True
        if not url.startswith(("https://", "http://")):
            self.state.setText("The URL must start with https:// (or http:// for a local receiver).")
            return False
        try:
            set_secret(WEBHOOK_SECRET, url)
        except KeyringUnavailable as exc:
            self.state.setText(str(exc))
            return False
        self.url.clear()
        self._show_state()
        return True

    def remove(self) -> None:
        delete_secret(WEBHOOK_SECRET)
        self._show_state()

    def send_test(self) -> None:
        if not self._store_typed_url():
            return
        sink = WebhookSink(self.format_box.currentData() if self.format_box.currentData() != "off" else "json")
        note = Notification("llmmon test message", "If you read this, llmmon's alerts reach you here.",
                            "info", (), time.time())
        self.test_button.setEnabled(False)
        self.test_result.setText("Sending…")
        # The POST may take seconds: off the GUI thread, back through a queued signal.
        threading.Thread(target=lambda: self.test_finished.emit(
            "Delivered." if sink.send(note) else "Not delivered: see the log for why."),
            name="webhook-test", daemon=True).start()

    def _test_done(self, text: str) -> None:
        self.test_result.setText(text)
        self.test_button.setEnabled(True)

    def accept(self) -> None:
        if self.keyring_available and not self._store_typed_url():
            return
        self.format = self.format_box.currentData()
        super().accept()
