"""The Servers tab: every LLM server llmmon watches, with a status light, kind, version, poll
latency and the reason when it is not up, and under each server the models it has loaded,
with a bar showing how much of each model sits in VRAM (below 100 % part of it runs on the
CPU). With no server it says why, and how to get one: what discovery tried and got.

Thin: it reads the hub's health and the live buffers; :func:`server_rows` gathers them."""
from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QLabel, QProgressBar, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app.buffers import LiveBuffers
from app.durations import spoken_duration
from app.records import Health, HealthState, labels_of
from app.runtime import Runtime
from app.server_kinds import where_to_start
from app.summary import watched_servers
from widgets.panel import ADD_SERVER, Panel
from widgets.theme import BAD, GOOD, PALETTE, WARN

LOOKING = "Looking for LLM servers on this machine…"
NONE_FOUND = f"No LLM server found: start {where_to_start()}, or add one in {ADD_SERVER}"
STATE_COLOURS = {HealthState.UP: GOOD, HealthState.DOWN: BAD, HealthState.ERROR: BAD}
COLUMNS = ["Server / model", "Kind", "Version", "Status", "Poll", "On GPU", "Unloads in"]
GIB = 2 ** 30


@dataclass(frozen=True)
class ModelRow:
    name: str
    gpu_share: float | None = None
    vram_bytes: float | None = None
    size_bytes: float | None = None
    expires_in_s: float | None = None
    context: float | None = None


@dataclass(frozen=True)
class ServerRow:
    health: Health
    models: list[ModelRow] = field(default_factory=list)


def _fresh(buffers: LiveBuffers, name: str, labels: dict[str, str], ts: float) -> float | None:
    """The value of a series at the poll of time ``ts`` (``None`` if that poll did not have it)."""
    point = buffers.latest((name, labels_of(labels)))
    return point[1] if point is not None and point[0] >= ts else None


def _model_row(buffers: LiveBuffers, model: str, labels: dict[str, str], ts: float) -> ModelRow:
    def get(metric: str) -> float | None:
        return _fresh(buffers, metric, labels, ts)
    return ModelRow(model, get("ollama_model_gpu_share_ratio"), get("ollama_model_vram_bytes"),
                    get("ollama_model_size_bytes"), get("ollama_model_expires_in_seconds"),
                    get("ollama_model_context_length") or get("llamacpp_model_context_length"))


def server_rows(health: dict[str, Health], buffers: LiveBuffers) -> list[ServerRow]:
    """The servers to list, sorted by name: every server collector's latest health (and the
    configured servers discovery could not identify yet), each with the models loaded at its
    latest successful poll."""
    servers = watched_servers(health)
    rows = []
    for h in sorted(servers, key=lambda h: h.source):
        models: list[ModelRow] = []
        loaded = buffers.latest(("llm_models_loaded", labels_of(server=h.source)))
        if h.state == HealthState.UP and loaded is not None:
            ts = loaded[0]
            for _, labels in buffers.find("llm_model_loaded", server=h.source):
                model = dict(labels)["model"]
                if _fresh(buffers, "llm_model_loaded", dict(labels), ts) is None:
                    continue  # unloaded since
                models.append(_model_row(buffers, model, dict(labels), ts))
        rows.append(ServerRow(h, sorted(models, key=lambda m: m.name)))
    return rows


def empty_text(health: dict[str, Health]) -> str:
    """Why no server is listed: still looking, or what discovery tried and got."""
    discovery = health.get("discovery")
    if discovery is None:
        return LOOKING
    details = discovery.reason.split("; not found: ", 1)
    tried = details[1].replace("; ", "\n") if len(details) == 2 else ""
    return NONE_FOUND + ("\n\nWhat llmmon tried:\n" + tried if tried else "")


def unloads_in(seconds: float | None) -> str:
    """When a model leaves memory: "now", "never" (Ollama's keep-alive -1) or in how long."""
    if seconds is None:
        return ""
    if seconds <= 0:
        return "now"
    if seconds > 365 * 86400:
        return "never"
    return spoken_duration(seconds)


class ServersPanel(Panel):
    title = "Servers"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.empty = QLabel(LOOKING)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: palette(placeholder-text); padding: 24px; font-size: 13pt;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.empty)
        layout.addWidget(self.tree, 1)
        self._shown: list[ServerRow] | None = None

    def refresh(self, now: float) -> None:
        health = dict(self.runtime.hub.health)
        rows = server_rows(health, self.runtime.hub.buffers)
        self.empty.setVisible(not rows)
        self.tree.setVisible(bool(rows))
        if not rows:
            self.empty.setText(empty_text(health))
        if rows != self._shown:
            self._rebuild(rows)
            self._shown = rows

    def _rebuild(self, rows: list[ServerRow]) -> None:
        self.tree.clear()
        for row in rows:
            h = row.health
            status = h.state.value.upper() + (f": {h.reason}" if h.reason else "")
            latency = f"{h.latency_s * 1000:.0f} ms" if h.latency_s is not None else ""
            kind = "" if h.kind == "server" else h.kind
            item = QTreeWidgetItem([f"● {self.runtime.display_name(h.source)}", kind, h.version, status, latency,
                                    "", ""])
            item.setForeground(0, QBrush(QColor(STATE_COLOURS.get(h.state, PALETTE[7]))))
            item.setToolTip(0, f"{h.source}\n{h.url}")
            item.setToolTip(3, status)
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            self.tree.addTopLevelItem(item)
            for model in row.models:
                context = f"context {model.context:.0f}" if model.context else ""
                child = QTreeWidgetItem([f"    {model.name}", "", context, "", "", "",
                                         unloads_in(model.expires_in_s)])
                item.addChild(child)
                if model.gpu_share is not None:
                    self.tree.setItemWidget(child, 5, self._vram_bar(model))
            item.setExpanded(True)
        for column in range(len(COLUMNS)):
            self.tree.resizeColumnToContents(column)
        self.tree.setColumnWidth(5, max(self.tree.columnWidth(5), 220))

    @staticmethod
    def _vram_bar(model: ModelRow) -> QProgressBar:
        bar = QProgressBar()
        share = max(0.0, min(1.0, model.gpu_share or 0.0))
        bar.setRange(0, 1000)
        bar.setValue(round(share * 1000))
        sizes = (f" · {model.vram_bytes / GIB:.1f} of {model.size_bytes / GIB:.1f} GiB"
                 if model.vram_bytes is not None and model.size_bytes else "")
        bar.setFormat(f"{share:.0%} in VRAM{sizes}")
        bar.setToolTip("Below 100 % part of the model runs on the CPU, which is much slower."
                       if share < 1 else "The whole model is in GPU memory.")
        colour = GOOD if share >= 0.999 else WARN
        bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; }}")
        return bar
