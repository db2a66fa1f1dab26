"""The Servers page of the settings: local discovery on or off, the servers the user added (a
table, and a form for the selected one), "Test connection" (kind, version and models found, or
why not), and the API key, which goes to the OS keyring only, under :func:`api_key_name` of
the server's URL, and never into config.toml (``api_key_ref`` names the keyring entry).

Without a secure keyring the key field is off and the page says why and what to do; the server
can still be saved without a key.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.config import Invalid, ServerEntry, Settings, check_setting
from app.config_edit import Edit
from app.secrets import get_secret
from app.server_kinds import KINDS as SERVER_KINDS
from collectors.connection_test import ConnectionResult, check_connection
from collectors.discovery import api_key_name, default_ports, normalise_url
from widgets.background import run_in_thread
from widgets.settings_fields import ERROR_STYLE, CheckedLine, add_checked, error_label, note, refusal
from widgets.theme import GOOD

KINDS = [("auto", "Recognise automatically"), *((k.id, k.display_name) for k in SERVER_KINDS)]
COLUMNS = ["Name", "URL", "Kind", "API key"]
OK_STYLE = f"color: {GOOD}"


def server_field(index: int) -> str:
    """How a refusal names a server's URL field: by the server's place in the list, from 1."""
    return f"URL of server {index + 1}"


@dataclass
class ServerRow:
    """One server in the page: what it was loaded as, what it is now, and its key's fate."""

    before: ServerEntry | None       # None: added in this dialog
    entry: ServerEntry               # the edited copy
    stored: bool = False             # the keyring holds the entry api_key_ref names
    typed_key: str = ""              # a new key, stored in the keyring on Save
    forget_key: bool = False         # remove the stored key on Save

    def key_state(self) -> str:
        if self.typed_key:
            return "new key, stored in the keyring on Save"
        if self.forget_key:
            return "stored key removed on Save"
        if self.stored:
            return "stored in the keyring"
        return f"“{self.entry.api_key_ref}” is not in the keyring" if self.entry.api_key_ref else "none"


class ServersPage(QWidget):
    """See the module docstring. ``keyring`` is :func:`app.secrets.keyring_status`'s answer."""

    title = "Servers"
    tested = Signal(object)  # a ConnectionResult (or the exception), from the test thread

    def __init__(self, keyring: tuple[bool, str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.keyring_ok, why = keyring
        self.rows: list[ServerRow] = []
        self.loaded: list[ServerEntry] = []
        self._filling = False

        ports = ", ".join(f"{label} :{port}" for port, label in default_ports())
        self.discover_local = QCheckBox("Look for servers on this computer's usual ports")
        self.discover_local.setToolTip(ports)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(110)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.add_button = QPushButton("Add server")
        self.add_button.clicked.connect(self.add_server)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_server)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)

        self.url = CheckedLine("servers.url", placeholder="http://gpu-box:8000")
        self.url.textEdited.connect(self._edited)
        self.kind = QComboBox()
        for kind, label in KINDS:
            self.kind.addItem(label, kind)
        self.kind.currentIndexChanged.connect(self._edited)
        self.name = QLineEdit()
        self.name.setPlaceholderText("shown in the tabs (default: kind@host:port)")
        self.name.textEdited.connect(self._edited)
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)  # a credential: never shown
        self.key.textEdited.connect(self._key_typed)
        self.key_state = QLabel()
        self.forget_button = QPushButton("Remove stored key")
        self.forget_button.clicked.connect(self._forget_key)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_state, 1)
        key_row.addWidget(self.forget_button)
        self.keyring_note = error_label()
        if not self.keyring_ok:
            self.key.setEnabled(False)
            self.key.setPlaceholderText("no secure keyring: see below")
            self.keyring_note.setText(
                f"API keys cannot be stored: {why}. llmmon never keeps a key in a plain file. You can save the "
                "server without a key now, and add the key here once a keyring is running (then open Settings "
                "again).")
            self.keyring_note.setVisible(True)
        else:
            self.key.setPlaceholderText("optional: a bearer token (kept in the OS keyring)")
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        self.tested.connect(self._test_done)

        form = QFormLayout()
        add_checked(form, "URL", self.url)
        form.addRow("Kind", self.kind)
        form.addRow("Name", self.name)
        form.addRow("API key", self.key)
        form.addRow("", key_row)
        self.editor = QGroupBox("Selected server")
        editor_layout = QVBoxLayout(self.editor)
        editor_layout.addLayout(form)
        editor_layout.addWidget(self.keyring_note)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        editor_layout.addLayout(test_row)

        layout = QVBoxLayout(self)
        layout.addWidget(self.discover_local)
        layout.addWidget(note(f"Ports looked at: {ports}. Servers elsewhere (another machine, another "
                              "port) go in the list below."))
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.editor)
        layout.addWidget(note("Changes apply when you save: new servers are looked for at once, removed ones "
                              "stop being watched (what was recorded stays)."))
        layout.addStretch(1)

    # ------------------------------------------------------------------ loading
    def load(self, settings: Settings) -> None:
        self.discover_local.setChecked(settings.discover_local)
        self.loaded = list(settings.servers)
        self.rows = [ServerRow(entry, replace(entry), stored=bool(entry.api_key_ref and get_secret(entry.api_key_ref)))
                     for entry in settings.servers]
        self._fill_table()
        if self.rows:
            self.table.selectRow(0)
        self._show_selected()

    def _fill_table(self) -> None:
        self._filling = True
        selected = self.selected_index()
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            self._fill_row(i, row)
        if selected is not None and selected < len(self.rows):
            self.table.selectRow(selected)
        self._filling = False

    def _fill_row(self, i: int, row: ServerRow) -> None:
        e = row.entry
        texts = [e.name or "(automatic)", e.url, dict(KINDS).get(e.kind, e.kind), row.key_state()]
        for column, text in enumerate(texts):
            self.table.setItem(i, column, QTableWidgetItem(text))

    def selected_index(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def selected(self) -> ServerRow | None:
        i = self.selected_index()
        return self.rows[i] if i is not None and i < len(self.rows) else None

    def _show_selected(self) -> None:
        if self._filling:
            return
        row = self.selected()
        self.editor.setEnabled(row is not None)
        self.remove_button.setEnabled(row is not None)
        self._filling = True
        self.url.where = server_field(self.selected_index() or 0)
        self.url.clear_error()
        self.test_result.clear()
        self.url.setText(row.entry.url if row else "")
        index = self.kind.findData(row.entry.kind if row else "auto")
        self.kind.setCurrentIndex(max(0, index))
        self.name.setText(row.entry.name if row else "")
        self.key.clear()
        self._show_key_state(row)
        self._filling = False

    def _show_key_state(self, row: ServerRow | None) -> None:
        self.key_state.setText(f"Key: {row.key_state()}" if row else "")
        self.forget_button.setEnabled(bool(row and self.keyring_ok and row.entry.api_key_ref and not row.forget_key))

    # ------------------------------------------------------------------ editing
    def _edited(self) -> None:
        row, i = self.selected(), self.selected_index()
        if self._filling or row is None or i is None:
            return
        row.entry.url = self.url.text().strip()
        row.entry.kind = str(self.kind.currentData())
        row.entry.name = self.name.text().strip()
        self._fill_row(i, row)

    def _key_typed(self, text: str) -> None:
        row, i = self.selected(), self.selected_index()
        if row is None or i is None:
            return
        row.typed_key = text.strip()
        if row.typed_key:
            row.forget_key = False
        self._fill_row(i, row)
        self._show_key_state(row)

    def _forget_key(self) -> None:
        row, i = self.selected(), self.selected_index()
        if row is None or i is None:
            return
        row.forget_key, row.typed_key = True, ""
        self.key.clear()
        self._fill_row(i, row)
        self._show_key_state(row)

    def add_server(self) -> None:
        self.rows.append(ServerRow(None, ServerEntry(url="")))
        self._fill_table()
        self.table.selectRow(len(self.rows) - 1)
        self._show_selected()
        self.url.setFocus()

    def remove_server(self) -> None:
        i = self.selected_index()
        if i is None:
            return
        del self.rows[i]
        self._fill_table()
        if self.rows:
            self.table.selectRow(min(i, len(self.rows) - 1))
        self._show_selected()

    # ------------------------------------------------------------------ testing
    def test_connection(self) -> None:
        row = self.selected()
        errors: list[str] = []
        ok, url = self.url.checked(errors)
        if row is None or not ok:
            return
        key = row.typed_key or (None if row.forget_key or not row.entry.api_key_ref
                                else get_secret(row.entry.api_key_ref))
        kind = row.entry.kind
        self.test_button.setEnabled(False)
        self.test_result.setStyleSheet("")
        self.test_result.setText(f"Connecting to {url}…")
        run_in_thread("llmmon-connection-test", lambda: check_connection(str(url), kind, key or None), self.tested)

    def _test_done(self, result: object) -> None:
        self.test_button.setEnabled(True)
        if isinstance(result, ConnectionResult):
            self.test_result.setText(result.summary())
            self.test_result.setStyleSheet(OK_STYLE if result.ok else ERROR_STYLE)
        else:
            self.test_result.setText(f"The test failed: {result}")
            self.test_result.setStyleSheet(ERROR_STYLE)

    # ------------------------------------------------------------------ saving
    def store(self, settings: Settings, errors: list[str]) -> None:
        """Check every server (the first refused one is selected, its reason under its URL) and
        put the list into ``settings``."""
        settings.discover_local = self.discover_local.isChecked()
        first_bad: int | None = None
        for i, row in enumerate(self.rows):
            try:
                row.entry.url = str(check_setting("servers.url", row.entry.url))
            except Invalid as exc:
                errors.append(refusal(server_field(i), exc, row.entry.url))
                first_bad = i if first_bad is None else first_bad
        if first_bad is not None:
            self.table.selectRow(first_bad)
            self.url.checked([])  # the reason, under the field
        for row in self.rows:
            if row.typed_key:
                row.entry.api_key_ref = row.entry.api_key_ref or api_key_name(row.entry.url)
            elif row.forget_key:
                row.entry.api_key_ref = ""
        settings.servers = [row.entry for row in self.rows]

    def edits(self) -> list[Edit[ServerEntry]]:
        return [Edit(row.before, row.entry) for row in self.rows]

    def new_keys(self) -> dict[str, str]:
        """Keyring entry → key, for the keys typed in this dialog."""
        return {row.entry.api_key_ref: row.typed_key for row in self.rows if row.typed_key}

    def dropped_keys(self) -> set[str]:
        """Keyring entries no server uses any more (forgotten, or their server removed)."""
        used = {row.entry.api_key_ref for row in self.rows if row.entry.api_key_ref}
        return {e.api_key_ref for e in self.loaded if e.api_key_ref} - used

    def changed_keys(self) -> list[str]:
        """URLs of servers whose key changed: watched again with the new one."""
        return [normalise_url(row.entry.url) for row in self.rows if row.typed_key or row.forget_key]
