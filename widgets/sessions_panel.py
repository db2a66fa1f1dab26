"""The Sessions tab: every recording session with what it holds, and what the user does with
them: start a new one, stop, rename and annotate (edit the cells), open a past one on the
dashboard, export to CSV, delete (after confirming). The header line shows the database's size
and what the next retention clean-up will remove; so does each row's Retention cell.

Requests and tokens are counted twice, each with its source: what llmmon measured (its proxy
and prompt tests) and what the servers' own counters saw (clients that talk to a server
directly show only there; see :mod:`app.storage.server_counts`).

The list is read on a worker thread (a big database takes a moment); edits go to the store's
writer thread. Neither blocks the window.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.durations import spoken_duration
from app.runtime import Runtime
from app.storage.queries import session_range
from app.storage.retention import GB, RetentionPlan, db_usage, retention_plan
from app.storage.server_counts import ServerCounts, session_server_counts
from app.storage.sessions import (
    SessionInfo,
    delete_session,
    list_sessions,
    rename_session,
    set_session_note,
)
from widgets.background import run_in_thread
from widgets.export_dialog import ExportDialog
from widgets.panel import Panel
from widgets.theme import BAD, emphasis

COLUMNS = ["Name", "Started", "Ended", "Duration", "Servers", "Models", "Requests", "Tokens",
           "Alerts", "Size", "Retention", "Note"]
NAME, NOTE = COLUMNS.index("Name"), COLUMNS.index("Note")
LISTS = (COLUMNS.index("Servers"), COLUMNS.index("Models"))  # long: a fixed width, full text in the tooltip
RELOAD_S = 30.0        # the recording session's numbers keep growing
ROW_SIZES_S = 600.0    # measuring average row sizes reads the whole file: not every reload


def format_bytes(n: float) -> str:
    for unit, size in (("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def count_cell(measured: int, server: int | None, servers: tuple[str, ...], estimated: bool,
               noun: str, tokens_only: bool = False) -> tuple[str, str]:
    """A count with where it comes from: ``"3 via llmmon · ≈20 seen by server"``, and a tooltip
    naming the sources ("≈": summed from the servers' rates, see app.storage.server_counts).
    ``tokens_only``: the session's servers counted tokens but not requests (llama.cpp)."""
    text = f"{measured:,} via llmmon" if server is not None or measured or tokens_only else "0"
    if server is None and tokens_only:
        text += " · server counts tokens only"
    tip = (f"{measured:,} {noun} measured by llmmon itself: requests sent through its proxy or its "
           "prompt test.")
    if server is not None:
        about = "≈" if estimated else ""
        text += f" · {about}{server:,} seen by server"
        tip += (f"\n{about}{server:,} {noun} according to the servers' own counters ({', '.join(servers)}), "
                "clients that talk to them directly included"
                + (" (summed from the per-second rates llmmon recorded)." if estimated else "."))
    elif noun == "requests":
        tip += ("\nNo server counted requests during this session (llama.cpp's /metrics counts "
                "tokens only: see Tokens).")
    return text, tip


def retention_summary(plan: RetentionPlan, sessions: list[SessionInfo]) -> str:
    """The database's size, the limits, and what the next clean-up removes (the Sessions tab's
    header line, and the preview in the settings' Storage page)."""
    usage = plan.usage
    limits = [f"{plan.keep_days:g} days" if plan.keep_days else "",
              f"{plan.max_bytes / GB:g} GB" if plan.max_bytes else ""]
    keep = " and ".join(x for x in limits if x) or "everything (no retention limit)"
    text = (f"Database {format_bytes(usage.file_bytes)} ({format_bytes(usage.used_bytes)} in use) · "
            f"{len(sessions)} session{'s' * (len(sessions) != 1)} · keeping {keep}.")
    if plan.cutoff is None:
        return text + " Nothing is due for removal."
    whole = sum(plan.effect(s) == "all" for s in sessions)
    part = sum(plan.effect(s) == "part" for s in sessions)
    why = "the age limit" if plan.reason == "age" else "the size limit"
    return (text + f" Next clean-up ({why}) removes data before {format_time(plan.cutoff)}: "
            f"{whole} whole session(s), part of {part}.")


class SessionsPanel(Panel):
    """The session browser. ``openSessionRequested(id)`` asks the dashboard to show a session."""

    title = "Sessions"
    openSessionRequested = Signal(int)
    # From worker threads; Qt queues them to the GUI thread.
    _loaded = Signal(object)   # (sessions, RetentionPlan, now), or the exception reading them
    _acted = Signal(object)    # (action number, what it did or the exception it raised)

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.sessions: list[SessionInfo] = []
        self.plan: RetentionPlan | None = None
        self.loading = False
        self.reload_again = False   # something changed while a read was under way
        # Actions (rename, note, new, stop) are numbered: each waits on a thread of its own, and
        # a busy machine can wake an earlier one last; its outcome must not replace a later one's.
        self.actions_started = 0
        self.actions_shown = 0
        self.loaded_at = float("-inf")
        self.row_sizes: tuple[float, dict[str, float]] | None = None   # (measured at, bytes per row)
        # what the servers' counters saw, per session; an ended session's figures never change
        self.server_counts: dict[int, ServerCounts] = {}
        self.confirm_box: QMessageBox | None = None
        self.export_dialog: ExportDialog | None = None

        self.summary = QLabel("Reading sessions…")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(NOTE, QHeaderView.ResizeMode.Stretch)
        for column in LISTS:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(column, 180)
        self.table.itemChanged.connect(self._cell_edited)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(self._double_clicked)

        self.new_button = self._button("New session", "End the current session and start recording a new one",
                                       self.start_new)
        self.stop_button = self._button("Stop session", "End the current session", self.stop)
        self.open_button = self._button("Open on dashboard", "Show this session's time range on the charts",
                                        self.open_selected)
        self.export_button = self._button("Export CSV…", "Write this session to CSV files", self.export_selected)
        self.delete_button = self._button("Delete…", "Delete this session and everything it recorded",
                                          self.delete_selected)
        self.refresh_button = self._button("Refresh", "Read the sessions again", self.reload)
        buttons = QHBoxLayout()
        for b in (self.new_button, self.stop_button, self.open_button, self.export_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        self.status = QLabel("Double-click a name or a note to edit it.")

        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self._loaded.connect(self._show_sessions)
        self._acted.connect(self._action_done)
        self._update_buttons()

    def _button(self, text: str, tip: str, slot: Callable[[], None]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    # ------------------------------------------------------------------ loading
    def refresh(self, now: float) -> None:
        if now - self.loaded_at >= RELOAD_S:
            self.reload()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.reload()

    def reload(self) -> None:
        """Read the sessions and the retention preview on a worker thread."""
        if self.loading:
            self.reload_again = True
            return
        self.loading = True
        self.loaded_at = time.time()
        store, settings = self.runtime.store, self.runtime.settings
        max_bytes = int(settings.retention_gb * GB) if settings.retention_gb else None

        sizes = self.row_sizes
        reuse = sizes[1] if sizes is not None and time.time() - sizes[0] < ROW_SIZES_S else None
        known = dict(self.server_counts)

        def work() -> tuple[list[SessionInfo], RetentionPlan, float, dict[int, ServerCounts]]:
            now = time.time()
            conn = store.reader()
            try:
                usage = db_usage(conn, reuse)
                sessions = list_sessions(conn, now, usage)
                counts = {s.id: known[s.id] if s.id in known and not s.recording
                          else session_server_counts(conn, s.id, s.started, s.ended, now) for s in sessions}
                return (sessions, retention_plan(conn, settings.retention_days, max_bytes, now, usage), now,
                        counts)
            finally:
                conn.close()
        run_in_thread("llmmon-sessions", work, self._loaded)

    def _show_sessions(self, result: object) -> None:
        self.loading = False
        if self.reload_again:
            self.reload_again = False
            self.reload()
        if isinstance(result, Exception):  # a locked or broken file: say so, keep the window alive
            self._set_status(f"Cannot read the sessions: {result}", error=True)
            return
        # The only other thing the worker hands over: work()'s result in reload().
        sessions, plan, now, counts = cast(tuple[list[SessionInfo], RetentionPlan, float, dict[int, ServerCounts]],
                                           result)
        selected = self.selected()
        self.sessions, self.plan, self.server_counts = sessions, plan, counts
        if self.row_sizes is None or self.row_sizes[1] is not plan.usage.bytes_per_row:
            self.row_sizes = (now, plan.usage.bytes_per_row)
        self.summary.setText(retention_summary(plan, sessions))
        self.table.blockSignals(True)  # filling cells is not the user editing them
        self.table.setRowCount(len(sessions))
        for row, s in enumerate(sessions):
            effect = plan.effect(s)
            retention = {"all": "will be removed",
                         "part": f"before {time.strftime('%d %b %H:%M', time.localtime(plan.cutoff))} removed"
                         if plan.cutoff else "",
                         "": ""}[effect]
            seen = counts.get(s.id, ServerCounts())
            requests = count_cell(s.requests, seen.requests, seen.request_servers, seen.requests_estimated,
                                  "requests", tokens_only=seen.tokens is not None)
            tokens = count_cell(s.prompt_tokens + s.completion_tokens, seen.tokens, seen.token_servers,
                                seen.tokens_estimated, "tokens (prompt and generated)")
            cells = [s.name, format_time(s.started), "recording" if s.ended is None else format_time(s.ended),
                     spoken_duration(s.duration(now)), ", ".join(s.servers), ", ".join(s.models),
                     requests[0], tokens[0], f"{s.alerts_fired:,}",
                     format_bytes(s.approx_bytes), retention, s.note]
            tips = {COLUMNS.index("Requests"): requests[1], COLUMNS.index("Tokens"): tokens[1]}
            for column, text in enumerate(cells):
                item = QTableWidgetItem(" ".join(text.split()) if column in LISTS else text)
                if column in LISTS:
                    item.setToolTip(text)
                elif column in tips:
                    item.setToolTip(tips[column])
                item.setData(Qt.ItemDataRole.UserRole, s.id)
                if column not in (NAME, NOTE):
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                if column in (COLUMNS.index("Requests"), COLUMNS.index("Tokens"), COLUMNS.index("Alerts"),
                              COLUMNS.index("Size")):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if column == COLUMNS.index("Retention") and effect:
                    item.setForeground(QColor(BAD))
                if s.recording and column == NAME:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        if selected is not None:
            self.select(selected.id)
        self._update_buttons()

    # ------------------------------------------------------------------ selection
    def selected(self) -> SessionInfo | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        if item is None:
            return None
        sid = item.data(Qt.ItemDataRole.UserRole)
        return next((s for s in self.sessions if s.id == sid), None)

    def select(self, session_id: int) -> None:
        for row, s in enumerate(self.sessions):
            if s.id == session_id:
                self.table.selectRow(row)
                return

    def _update_buttons(self) -> None:
        chosen = self.selected()
        recording_id = self.runtime.store.session_id
        self.stop_button.setEnabled(recording_id is not None)
        for b in (self.open_button, self.export_button):
            b.setEnabled(chosen is not None)
        deletable = chosen is not None and chosen.id != recording_id
        self.delete_button.setEnabled(deletable)
        self.delete_button.setToolTip("Delete this session and everything it recorded" if deletable or chosen is None
                                      else "This session is recording: stop it or start a new one first")

    # ------------------------------------------------------------------ actions
    def start_new(self) -> None:
        self._act(self.runtime.store.begin_session, "New session started.", session_changed=True)

    def stop(self) -> None:
        self._act(self.runtime.store.end_session, "Session stopped.", session_changed=True)

    def open_selected(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            self.openSessionRequested.emit(chosen.id)

    def export_selected(self) -> None:
        chosen = self.selected()
        if chosen is None:
            return
        self.export_dialog = ExportDialog(self.runtime.store, chosen, self)
        self.export_dialog.open()

    def delete_selected(self) -> None:
        chosen = self.selected()
        if chosen is None or chosen.id == self.runtime.store.session_id:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete session",
                          f"Delete “{chosen.name}” and everything it recorded "
                          f"({chosen.samples:,} samples, {chosen.requests:,} requests, "
                          f"about {format_bytes(chosen.approx_bytes)})? This cannot be undone.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText("Delete")
        box.finished.connect(lambda _: self._confirmed(box, chosen))
        self.confirm_box = box
        box.open()

    def _confirmed(self, box: QMessageBox, session: SessionInfo) -> None:
        self.confirm_box = None
        if box.clickedButton() is not box.button(QMessageBox.StandardButton.Yes):
            return
        self._set_status(f"Deleting “{session.name}”…")
        self._act(delete_session(self.runtime.store, session.id).result, f"Deleted “{session.name}”.")

    def _cell_edited(self, item: QTableWidgetItem) -> None:
        sid = item.data(Qt.ItemDataRole.UserRole)
        if item.column() == NAME:
            if not item.text().strip():
                self._set_status("A session needs a name.", error=True)
                self.reload()
                return
            self._act(rename_session(self.runtime.store, sid, item.text()).result, "Renamed.")
        elif item.column() == NOTE:
            self._act(set_session_note(self.runtime.store, sid, item.text()).result, "Note saved.")

    def _double_clicked(self, row: int, column: int) -> None:
        if column not in (NAME, NOTE):
            self.open_selected()

    # ------------------------------------------------------------------ plumbing
    def _act(self, wait: Callable[[], object], message: str, session_changed: bool = False) -> None:
        """Wait for a store call off the GUI thread (a locked database can hold the writer up),
        then show ``message`` or the error, and read the list again. When the recording session
        changed, the charts' time range follows it (a new session's charts start at its start)."""
        store = self.runtime.store
        self.actions_started += 1
        number = self.actions_started

        def outcome() -> tuple[str, bool, float | None]:
            wait()
            if not session_changed or store.session_id is None:
                return message, session_changed, None
            conn = store.reader()
            try:
                found = session_range(conn, store.session_id)
            finally:
                conn.close()
            return message, True, found[0] if found else None

        def work() -> tuple[int, object]:
            try:
                return number, outcome()
            except Exception as exc:  # handed over with its number, shown as the error
                return number, exc
        run_in_thread("llmmon-session-action", work, self._acted)

    def _action_done(self, done: object) -> None:
        # The only thing the worker hands over: work()'s (number, outcome) in _act().
        number, outcome = cast(tuple[int, object], done)
        latest = number > self.actions_shown
        self.actions_shown = max(self.actions_shown, number)
        if isinstance(outcome, Exception):  # an error is shown even when a later action is done
            self._set_status(f"Error: {outcome}", error=True)
        elif latest:
            message, session_changed, started = cast(tuple[str, bool, float | None], outcome)
            self._set_status(message)
            if session_changed and self.view is not None:
                self.view.set_session_start(started)
        self.reload()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(emphasis(BAD) if error else "")
