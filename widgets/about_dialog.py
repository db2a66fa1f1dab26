"""Help → About: what llmmon is running on (versions, the GPU driver or why there is none, the
servers found, where the data and logs are), as text a user can copy into a bug report."""
from __future__ import annotations

import html
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from app.config import log_dir
from app.records import HealthState
from app.runtime import Runtime
from app.server_kinds import is_server_kind
from widgets.app_icon import app_icon


def llmmon_version() -> str:
    try:
        return version("llmmon")
    except PackageNotFoundError:  # run from a checkout that pip never installed
        return "unknown (not installed)"


def gpu_line(runtime: Runtime) -> str:
    gpu = next((h for h in runtime.hub.health.values() if h.kind == "gpu"), None)
    if gpu is None:
        return "not checked yet"
    if gpu.state == HealthState.UP:
        return f"NVIDIA driver {gpu.version}" if gpu.version else "NVIDIA GPU found"
    return gpu.reason or gpu.state.value


def server_lines(runtime: Runtime) -> list[str]:
    servers = sorted((h for h in runtime.hub.health.values() if is_server_kind(h.kind)), key=lambda h: h.source)
    return [f"{runtime.display_name(h.source)} ({h.kind}{', ' + h.version if h.version else ''}) {h.url}: "
            f"{h.state.value}" for h in servers] or ["none yet (llmmon looks on the default local ports every 30 s)"]


def about_lines(runtime: Runtime) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order shown."""
    return [
        ("llmmon", llmmon_version()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("Qt", f"{qVersion()} (PySide6 {PySide6.__version__})"),
        ("System", platform.platform()),
        ("GPU", gpu_line(runtime)),
        ("Servers", "\n".join(server_lines(runtime))),
        ("Database", str(runtime.store.path)),
        ("Logs", str(log_dir())),
    ]


class AboutDialog(QDialog):
    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About llmmon")
        self.setWindowIcon(app_icon())
        rows = "".join(f"<tr><td><b>{html.escape(label)}</b></td><td>{html.escape(text).replace(chr(10), '<br>')}"
                       "</td></tr>" for label, text in about_lines(runtime))
        self.text = QLabel(
            "<p>A desktop monitor for the LLM servers on your workstation.</p>"
            f"<table cellspacing='6'>{rows}</table>")
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
