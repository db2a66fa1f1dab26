"""The Settings window (File → Settings…, Ctrl+,): pages for Servers, Polling, Proxy, Storage,
Appearance, Notifications, Privacy and Desktop, listed on the left; each page scrolls, so the
window fits a small screen.

Save checks every field with the setting's own check (:func:`app.config.check_setting`) and
refuses the save while any is wrong, showing each reason under its field and the list at the
bottom. Then, in this order: secrets go to the OS keyring (an API key, the webhook URL; never
to a file); config.toml gets only what changed, written atomically with the user's comments
and layout kept (:mod:`app.config_edit`); notification settings go to the ``[notifications]``
table of the alert rule file (where the Alerts tab edits them too); the running app takes the
new settings at once (:meth:`app.runtime.Runtime.apply`, the theme, the notifier).

Cancel, Escape and the title bar's close button ask "Discard your changes?" when the fields
hold something Save would change (a value typed back to what it was is no change), and close
at once otherwise.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.alerts.rule_file import set_notify_option
from app.alerts.rules import (
    DEFAULT_RULES_PATH,
    NotifySettings,
    ensure_user_rules,
    load_rules,
    user_rules_path,
)
from app.config import Settings, config_path, load_settings
from app.config_edit import save_settings
from app.config_write import ConfigWriteError, write_atomically
from app.durations import format_duration
from app.runtime import Runtime
from app.secrets import KeyringUnavailable, delete_secret, keyring_status, set_secret
from widgets.settings_fields import ERROR_STYLE, scrolling
from widgets.settings_pages import (
    AppearancePage,
    DesktopPage,
    NotificationsPage,
    PollingPage,
    PrivacyPage,
    ProxyPage,
    StoragePage,
)
from widgets.settings_servers import ServersPage
from widgets.theme import apply_colour_scheme

log = logging.getLogger(__name__)


class SettingsDialog(QDialog):
    """See the module docstring.

    Args:
        runtime: the running core the saved settings are applied to (``None``: only saved).
        config_file: the settings file (default: the user's config.toml).
        desktop_actions: the window's checkable "Start minimised" / "Start on login" actions.
    """

    saved = Signal()

    def __init__(self, runtime: Runtime | None = None, config_file: Path | None = None,
                 desktop_actions: list[QAction] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("llmmon settings")
        self.runtime = runtime
        self.config_file = config_file or (runtime.config_file if runtime is not None else None) or config_path()
        self.before, problems = load_settings(self.config_file)
        self.proxy_errors: list[str] = []
        keyring = keyring_status()
        engine = runtime.alerts if runtime is not None else None
        # The user's rule file; None when the engine runs on the shipped defaults (not editable).
        rules_path = engine.rule_file.path if engine is not None else user_rules_path()
        self.rules_path = None if rules_path in (None, DEFAULT_RULES_PATH) else rules_path
        notify = engine.rule_file.notifications if engine is not None else \
            load_rules(rules_path).notifications if rules_path is not None and rules_path.exists() \
            else NotifySettings()

        self.servers = ServersPage(keyring)
        self.polling = PollingPage()
        self.proxy = ProxyPage(runtime.discovery.servers if runtime is not None and runtime.discovery else tuple)
        self.storage = StoragePage(runtime.store if runtime is not None else None)
        self.appearance = AppearancePage()
        self.notifications = NotificationsPage(keyring, engine.notifier if engine is not None else None,
                                               str(self.rules_path or DEFAULT_RULES_PATH))
        self.privacy = PrivacyPage()
        self.desktop = DesktopPage(desktop_actions or [])
        self.pages: list[QWidget] = [self.servers, self.polling, self.proxy, self.storage, self.appearance,
                                     self.notifications, self.privacy]
        if desktop_actions:  # the window's desktop switches, where this window has them
            self.pages.append(self.desktop)
        for page in (self.servers, self.polling, self.proxy, self.storage, self.appearance, self.privacy):
            page.load(self.before)
        self.notifications.load(notify)

        self.sidebar = QListWidget()
        self.stack = QStackedWidget()
        for shown in self.pages:
            self.sidebar.addItem(str(getattr(shown, "title", "")))
            self.stack.addWidget(scrolling(shown))
        self.sidebar.setStyleSheet("QListWidget::item { padding: 4px 6px; }")
        self.sidebar.setFixedWidth(self.sidebar.sizeHintForColumn(0) + 36)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.sidebar.setCurrentRow(0)

        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet(ERROR_STYLE)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems.setText(f"{self.config_file} has problems; those values use their defaults here, and "
                              "saving leaves them as written unless you change them:\n" + "\n".join(problems))
        self.problems.setVisible(bool(problems))
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet(ERROR_STYLE)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setVisible(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        body = QHBoxLayout()
        body.addWidget(self.sidebar)
        body.addWidget(self.stack, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.problems)
        layout.addLayout(body, 1)
        layout.addWidget(self.message)
        layout.addWidget(self.buttons)
        self._fit_screen()

    def _fit_screen(self) -> None:
        """As large as the pages like, within 90 % of the screen (the pages scroll)."""
        parent = self.parentWidget()
        screen = (parent.screen() if parent is not None else None) or QGuiApplication.primaryScreen()
        width, height = 900, 680
        if screen is not None:
            room = screen.availableGeometry()
            width, height = min(width, int(room.width() * 0.9)), min(height, int(room.height() * 0.9))
        self.resize(width, height)

    def show_page(self, page: QWidget) -> None:
        self.sidebar.setCurrentRow(self.pages.index(page))

    # ------------------------------------------------------------------ saving
    def collect(self) -> tuple[Settings, NotifySettings, list[str]]:
        """The settings in the fields, and every refused value's reason (the first page with
        one is shown)."""
        after = copy.deepcopy(self.before)
        errors: list[str] = []
        first_bad: QWidget | None = None
        for page in (self.servers, self.polling, self.proxy, self.storage, self.appearance, self.privacy):
            found: list[str] = []
            page.store(after, found)
            if found and first_bad is None:
                first_bad = page
            errors += [f"{page.title} › {reason}" for reason in found]  # the page to go to, then the field
        found = []
        notify = self.notifications.store(found)
        if found and first_bad is None:
            first_bad = self.notifications
        errors += [f"{self.notifications.title} › {reason}" for reason in found]
        if first_bad is not None:
            self.show_page(first_bad)
        return after, notify, errors

    def save(self) -> bool:
        """Check, store and apply (see the module docstring); False (nothing written) when a
        value is refused or the file cannot be written, with the reason shown."""
        after, notify, errors = self.collect()
        if errors:
            self._say(f"Not saved: {len(errors)} value{'s' * (len(errors) != 1)} to correct.\n" + "\n".join(errors))
            return False
        try:
            for name, key in self.servers.new_keys().items():
                set_secret(name, key)
            self.notifications.apply_secret()
        except KeyringUnavailable as exc:
            self._say(f"Not saved: {exc}. Save without the key, or make a keyring available first.")
            return False
        try:
            save_settings(self.config_file, self.before, after, servers=self.servers.edits(),
                          routes=self.proxy.edits())
            self._save_notifications(notify)
        except (ConfigWriteError, OSError) as exc:
            self._say(f"Not saved: {self.config_file}: {exc}")
            return False
        for name in self.servers.dropped_keys():
            delete_secret(name)
        self.desktop.apply()
        app = QApplication.instance()
        if after.theme != self.before.theme and isinstance(app, QApplication):
            apply_colour_scheme(app, after.theme)
        # What a restart would read: the file as saved, with any change made meanwhile elsewhere
        # (the Requests tab's proxy switch, a hand edit) that this dialog did not touch.
        self.before, problems = load_settings(self.config_file)
        if self.runtime is not None:
            self.proxy_errors = self.runtime.apply(self.before, reconnect=self.servers.changed_keys(),
                                                   problems=problems)
        log.info("settings saved and applied")
        self.saved.emit()
        return True

    def _save_notifications(self, notify: NotifySettings) -> None:
        """Changed ``[notifications]`` keys into the rule file (its comments kept), and the
        engine reloads it."""
        old = self.notifications.loaded
        changes = {key: value for key, value, was in (
            ("desktop", "true" if notify.desktop else "false", old.desktop != notify.desktop),
            ("tray", "true" if notify.tray else "false", old.tray != notify.tray),
            ("webhook", f'"{notify.webhook}"', old.webhook != notify.webhook),
            ("group_seconds", f'"{format_duration(notify.group_seconds)}"', old.group_seconds != notify.group_seconds),
        ) if was}
        if not changes:
            return
        if self.rules_path is None:
            raise ConfigWriteError("the shipped alert rules are in use (your rule file could not be created)")
        text = ensure_user_rules(self.rules_path).read_text(encoding="utf-8")  # the defaults first
        for key, value in changes.items():
            text = set_notify_option(text, key, value)
        write_atomically(self.rules_path, text)
        self.notifications.loaded = notify
        engine = self.runtime.alerts if self.runtime is not None else None
        if engine is not None:
            engine.reload()

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(True)

    def accept(self) -> None:
        if self.save():
            super().accept()

    # ------------------------------------------------------------------ closing
    def has_changes(self) -> bool:
        """Whether the fields hold anything Save would write or apply: the collected values
        against those loaded, keys typed or forgotten, the desktop switches. A refused value
        counts: it was typed here (loaded values are valid or shown as their defaults)."""
        after, notify, errors = self.collect()
        return bool(errors or after != self.before or notify != self.notifications.loaded
                    or self.servers.new_keys() or self.notifications.typed_url or self.notifications.forget_url
                    or any(action.isChecked() != box.isChecked() for action, box in self.desktop.boxes))

    def reject(self) -> None:
        """Cancel, Escape and the close button (QDialog's closeEvent comes here): unsaved
        changes are dropped only when the user says so."""
        if self.has_changes() and not self._discard_confirmed():
            return
        super().reject()

    def _discard_confirmed(self) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, "llmmon settings", "Discard your changes?",
                          QMessageBox.StandardButton.NoButton, self)
        box.setInformativeText("The settings you changed here have not been saved.")
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep editing", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.setEscapeButton(keep)
        box.exec()
        return box.clickedButton() is discard
