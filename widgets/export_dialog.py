"""The "Export session to CSV" dialog: choose a folder, the wide file's resolution and which
metrics; the export runs on a worker thread with a progress bar and a Cancel button."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.export import CsvExport, ExportCancelled, ExportRequest, ExportResult
from app.storage.sessions import SessionInfo
from app.storage.store import Store
from widgets.background import run_in_thread
from widgets.theme import BAD, emphasis

RESOLUTIONS = [("1 s", 1.0), ("10 s", 10.0), ("1 min", 60.0), ("5 min", 300.0), ("1 h", 3600.0)]


def default_folder(session: SessionInfo) -> Path:
    return Path.home() / "llmmon-exports" / f"session-{session.id}"


class ExportDialog(QDialog):
    """Exports one session. Opened with ``open()``; stays usable for another export afterwards."""

    # From the export thread; Qt queues them to the dialog's (GUI) thread.
    _progressed = Signal(float, str)
    _finished = Signal(object)   # ExportResult, or the exception that ended the export

    def __init__(self, store: Store, session: SessionInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.session = session
        self.job: CsvExport | None = None
        self.exported: ExportResult | None = None  # the last finished export
        self.setWindowTitle(f"Export “{session.name}” to CSV")
        self.setMinimumWidth(560)

        self.folder_edit = QLineEdit(str(default_folder(session)))
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(choose)
        self.resolution_box = QComboBox()
        self.resolution_box.addItems([label for label, _ in RESOLUTIONS])
        self.resolution_box.setCurrentIndex(1)
        self.resolution_box.setToolTip("Row spacing of samples_wide.csv: each cell is the mean over that time")
        self.metrics_edit = QLineEdit()
        self.metrics_edit.setPlaceholderText("all metrics, or patterns such as gpu_*, llm_tokens_per_second")
        form = QFormLayout()
        form.addRow("Folder:", folder_row)
        form.addRow("Wide file resolution:", self.resolution_box)
        form.addRow("Metrics:", self.metrics_edit)
        explain = QLabel("Writes requests.csv, samples.csv (one row per sample), samples_wide.csv "
                         "(one column per series), alerts.csv and events.csv. Files of the same "
                         "names in the folder are replaced.")
        explain.setWordWrap(True)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.open_button.setEnabled(False)
        self.export_button.clicked.connect(self.start)
        self.open_button.clicked.connect(self._open_folder)
        self.cancel_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(explain)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self._progressed.connect(self._show_progress)
        self._finished.connect(self._done)

    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self) -> None:
        """Start the export on a worker thread."""
        if self.running:
            return
        folder = self.folder_edit.text().strip()
        if not folder:
            self._show_status("Choose a folder first.", error=True)
            return
        request = ExportRequest(self.session.id, Path(folder).expanduser(),
                                metrics=self.metrics_edit.text().strip(),
                                resolution_s=RESOLUTIONS[self.resolution_box.currentIndex()][1])
        conn = self.store.reader()
        self.job = job = CsvExport(conn, request, lambda fraction, what: self._progressed.emit(fraction, what))
        self.exported = None
        self.export_button.setEnabled(False)
        self.open_button.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self.progress.setValue(0)
        self._show_status("Exporting…")

        def work() -> ExportResult:
            try:
                return job.run()
            finally:
                conn.close()
        run_in_thread("llmmon-export", work, self._finished)

    def reject(self) -> None:
        """Cancel cancels a running export first; a second press (or none running) closes."""
        if self.job is not None and not self.job.cancelled:
            self.job.cancel()
            self._show_status("Cancelling…")
            return
        super().reject()

    # ------------------------------------------------------------------ slots
    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if chosen:
            self.folder_edit.setText(chosen)

    def _open_folder(self) -> None:
        if self.exported is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.exported.out_dir)))

    def _show_progress(self, fraction: float, what: str) -> None:
        if self.job is None:
            return  # a late signal after the export ended
        self.progress.setValue(int(fraction * 1000))
        self._show_status(f"Writing {what}…" if what != "done" else "Finishing…")

    def _done(self, outcome: object) -> None:
        self.job = None
        self.export_button.setEnabled(True)
        self.cancel_button.setText("Close")
        if isinstance(outcome, ExportResult):
            self.exported = outcome
            self.progress.setValue(1000)
            self.open_button.setEnabled(True)
            rows = ", ".join(f"{name} {n:,}" for name, n in outcome.rows.items())
            self._show_status(f"Exported to {outcome.out_dir} in {outcome.seconds:.1f} s: {rows} rows.")
        elif isinstance(outcome, ExportCancelled):
            self.progress.setValue(0)
            self._show_status("Cancelled: nothing was written.")
        else:
            self.progress.setValue(0)
            self._show_status(f"Export failed: {outcome}", error=True)

    def _show_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(emphasis(BAD) if error else "")
