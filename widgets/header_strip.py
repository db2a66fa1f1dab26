"""The strip of big numbers at the top of the window: what a user wants to know in five
seconds (servers up, models loaded, tokens/s, TTFT, active requests, GPU, alerts firing)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.server_kinds import where_to_start
from app.summary import Summary
from app.units import format_value
from widgets.panel import ADD_SERVER
from widgets.theme import BAD, GOOD, MUTED, WARN, restyle


class Tile(QFrame):
    """One figure: a caption above a big value."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.caption = QLabel(caption)
        self.caption.setStyleSheet(MUTED)
        self.value = QLabel("—")
        font = QFont(self.value.font())
        font.setPointSizeF(font.pointSizeF() * 1.7)
        font.setBold(True)
        self.value.setFont(font)
        self.value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(0)
        layout.addWidget(self.caption)
        layout.addWidget(self.value)

    def show_value(self, text: str, tooltip: str = "", colour: str = "") -> None:
        self.value.setText(text)
        restyle(self.value, f"color: {colour};" if colour else "")
        if tooltip != self.toolTip():
            self.setToolTip(tooltip)


class HeaderStrip(QWidget):
    """Renders a :class:`~app.summary.Summary`; computes nothing itself."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tiles = {key: Tile(caption) for key, caption in (
            ("servers", "Servers up"), ("models", "Models loaded"), ("tokens", "Tokens/s now"),
            ("ttft", "TTFT p50"), ("active", "Active requests"), ("gpu", "GPU util · temp"),
            ("vram", "VRAM"), ("alerts", "Alerts firing"))}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 0)
        for tile in self.tiles.values():
            layout.addWidget(tile, 1)

    def show_summary(self, s: Summary) -> None:
        t = self.tiles
        if s.servers_total:
            colour = GOOD if s.servers_up == s.servers_total else (BAD if not s.servers_up else WARN)
            t["servers"].show_value(f"{s.servers_up} / {s.servers_total}", colour=colour)
        else:
            t["servers"].show_value("none", f"No LLM server found yet: start {where_to_start()}, "
                                    f"or add one in {ADD_SERVER}")
        t["models"].show_value("—" if s.models_loaded is None else str(s.models_loaded),
                               "" if s.models_loaded is not None else "No server reports loaded models")
        t["tokens"].show_value("—" if s.tokens_per_s is None else f"{s.tokens_per_s:,.1f}",
                               "Generated tokens per second, measured by the proxy or reported by "
                               "the servers" if s.tokens_per_s is not None else
                               "No generation in the last 15 s")
        t["ttft"].show_value("—" if s.ttft_p50_s is None else format_value(s.ttft_p50_s, "s"),
                             "Median time to first token over the recent window")
        t["active"].show_value("—" if s.active_requests is None else f"{s.active_requests:.0f}")
        if s.gpu_state == "absent":
            t["gpu"].show_value("no GPU", s.gpu_reason or "No NVIDIA GPU found")
            t["vram"].show_value("—", s.gpu_reason or "No NVIDIA GPU found")
        else:
            util = "—" if s.gpu_util_percent is None else f"{s.gpu_util_percent:.0f} %"
            temp = "" if s.gpu_temp_c is None else f" · {s.gpu_temp_c:.0f} °C"
            hot = s.gpu_temp_c is not None and s.gpu_temp_c >= 85
            t["gpu"].show_value(util + temp, s.gpu_reason, BAD if hot else "")
            if s.vram_used_bytes is not None and s.vram_total_bytes:
                share = s.vram_used_bytes / s.vram_total_bytes
                t["vram"].show_value(f"{s.vram_used_bytes / 2**30:.1f} / {s.vram_total_bytes / 2**30:.0f} GiB",
                                     f"{share:.0%} used", BAD if share >= 0.95 else "")
            else:
                t["vram"].show_value("—")
        if s.alerts_firing is None:
            t["alerts"].show_value("—", "The alert engine is not running")
        else:
            colour = {"critical": BAD, "warning": WARN}.get(s.alerts_worst, GOOD)
            t["alerts"].show_value(str(s.alerts_firing), s.alerts_worst, colour)
