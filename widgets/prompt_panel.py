"""The Prompt test tab: pick one or several models, type a prompt, run it, watch each answer
stream in side by side with its TTFT (as soon as the first text arrives), a running tokens/s
while it streams and the final figures and token counts, cancel, and look back at earlier runs.
The measuring is done by :mod:`app.prompt_runner`; this widget only renders."""
from __future__ import annotations

import functools
import logging
import sqlite3
import time

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.prompt_runner import LiveFigures, PromptRequest, PromptRun, PromptTarget
from app.records import HealthState, RequestRecord
from app.runtime import Runtime
from app.secrets import get_secret
from app.server_kinds import is_server_kind, where_to_start
from app.storage.queries import PromptTestRun, prompt_test_runs
from app.units import format_value
from widgets.benchmark_dialog import BenchmarkDialog
from widgets.panel import Panel
from widgets.theme import BAD, MUTED

log = logging.getLogger(__name__)
NO_MODELS = ("No model to test: no LLM server is up with a model loaded.\n"
             f"Start {where_to_start()}, or type a model name at the left.")
INTRO = ("Tick one or more models, type a prompt and press Run: the answers stream in here side by side, "
         "each with its time to first token, tokens/s and token counts.")
MISSING_INPUT = "Tick at least one model and type a prompt."
HISTORY_ROWS = 200


class _Relay(QObject):
    """Carries a run's text and result from its thread to the GUI thread (queued signals)."""

    text = Signal(int, str)
    progress = Signal(int, object)
    done = Signal(int, object)


def figures_text(rec: RequestRecord) -> str:
    """One line of what was measured, with "est." on chunk-counted token figures."""
    parts = []
    if rec.ttft_s is not None:
        parts.append(f"TTFT {format_value(rec.ttft_s, 's')}")
    speed = rec.server_tokens_per_s if rec.server_tokens_per_s is not None else rec.client_tokens_per_s
    if speed is not None:
        parts.append(f"{speed:,.1f} tokens/s" + (" (server)" if rec.server_tokens_per_s is not None else ""))
    if rec.completion_tokens is not None:
        est = " est." if rec.tokens_estimated else ""
        parts.append(f"{rec.prompt_tokens if rec.prompt_tokens is not None else '?'} → "
                     f"{rec.completion_tokens}{est} tokens")
    if rec.latency_s is not None:
        parts.append(f"total {format_value(rec.latency_s, 's')}")
    if rec.error_type:
        parts.append(f"{rec.error_type}: {rec.error}")
    return " · ".join(parts) or "waiting for the first token…"


def live_text(figures: LiveFigures) -> str:
    """The figures of an answer still streaming: its TTFT, and the rate so far (counted chunks,
    hence "≈"; the server's own count replaces it at the end)."""
    parts = [f"TTFT {format_value(figures.ttft_s, 's')}"]
    rate = figures.tokens_per_s
    parts.append(f"≈ {rate:,.1f} tokens/s so far" if rate is not None else "generating…")
    parts.append(f"{figures.chunks} chunks")
    return " · ".join(parts)


class ResultCard(QGroupBox):
    """One target's answer as it streams, with the figures above it."""

    def __init__(self, target: PromptTarget, server_name: str = "", parent: QWidget | None = None) -> None:
        super().__init__(f"{target.model} @ {server_name or target.server}", parent)
        self.figures = QLabel("waiting for the first token…")
        self.figures.setWordWrap(True)
        self.figures.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.answer = QPlainTextEdit()
        self.answer.setReadOnly(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.figures)
        layout.addWidget(self.answer, 1)
        self.setMinimumWidth(320)

    def append(self, text: str) -> None:
        cursor = self.answer.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)

    def show_progress(self, figures: LiveFigures) -> None:
        self.figures.setText(live_text(figures))

    def finish(self, rec: RequestRecord) -> None:
        self.figures.setText(figures_text(rec))
        colour = BAD if rec.error_type and rec.error_type != "cancelled" else ""
        self.figures.setStyleSheet(f"color: {colour};" if colour else "")


class PromptPanel(Panel):
    title = "Prompt test"

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(runtime, parent)
        self.relay = _Relay()
        self.relay.text.connect(lambda i, t: self.cards[i].append(t))
        self.relay.progress.connect(lambda i, f: self.cards[i].show_progress(f))
        self.relay.done.connect(self._finished)
        self.runs: list[PromptRun] = []
        self.cards: list[ResultCard] = []
        self._running = 0

        self.targets = QListWidget()
        self.targets.setToolTip("Tick every model the prompt should go to; they run side by side")
        self.extra_model = QLineEdit()
        self.extra_model.setPlaceholderText("another model on the first server, e.g. llama3.2:3b")
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.system.setMaximumHeight(60)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Prompt")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(-0.1, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setSpecialValueText("server default")
        self.temperature.setValue(-0.1)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(0, 1_000_000)
        self.max_tokens.setSpecialValueText("server default")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.seed.setValue(-1)
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run_prompt)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.bench_button = QPushButton("Benchmark…")
        self.bench_button.setToolTip("Repeat this prompt N times against the ticked models, store the run, "
                                     "compare it with another")
        self.bench_button.clicked.connect(self.open_benchmark)
        self.benchmark: BenchmarkDialog | None = None

        params = QFormLayout()
        params.addRow("Temperature", self.temperature)
        params.addRow("Max tokens", self.max_tokens)
        params.addRow("Seed", self.seed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.bench_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("Models"))
        left_layout.addWidget(self.targets, 1)
        left_layout.addWidget(self.extra_model)
        left_layout.addWidget(self.system)
        left_layout.addWidget(self.prompt, 1)
        left_layout.addLayout(params)
        left_layout.addLayout(buttons)

        # What to do next (no model up, how to start, what is missing) is said in the wide results
        # pane, not in the narrow left column: squeezed there at 1024×640 its wrapped lines were cut
        self.results_host = QWidget()
        self.host_layout = QVBoxLayout(self.results_host)
        self.guide = QLabel(NO_MODELS)
        self.guide.setWordWrap(True)
        self.guide.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.guide.setStyleSheet(MUTED)
        self.results = QHBoxLayout()
        self.host_layout.addWidget(self.guide, 1)
        self.host_layout.addLayout(self.results, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.results_host)
        self.history = QTableWidget(0, 6)
        self.history.setHorizontalHeaderLabels(["Time", "Model", "TTFT", "Tokens/s", "Tokens", "Prompt"])
        self.history.horizontalHeader().setStretchLastSection(True)
        self.history.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.history.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(scroll)
        right.addWidget(self.history)
        right.setSizes([500, 200])
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([380, 900])
        QVBoxLayout(self).addWidget(split)
        self._history_loaded = False  # from the database once, on first show; then kept live

    # ------------------------------------------------------------------ targets
    def available_targets(self) -> list[PromptTarget]:
        """Models loaded on servers that are up, from the collectors' own readings."""
        hub = self.runtime.hub
        up = {h.source: h for h in list(hub.health.values())
              if is_server_kind(h.kind) and h.state == HealthState.UP and h.url}
        out = []
        for _name, labels in hub.buffers.keys("llm_model_loaded"):
            lab = dict(labels)
            health = up.get(lab.get("server", ""))
            if health is not None and hub.buffers.latest_value("llm_model_loaded", labels):
                out.append(PromptTarget(health.source, health.url, health.kind, lab.get("model", ""),
                                        self._api_key(health.url)))
        return sorted(out, key=lambda t: (t.server, t.model))

    def _api_key(self, url: str) -> str | None:
        entry = next((s for s in self.runtime.settings.servers if s.url.rstrip("/") == url.rstrip("/")), None)
        return get_secret(entry.api_key_ref) if entry is not None and entry.api_key_ref else None

    def _sync_targets(self) -> None:
        wanted = self.available_targets()
        have = [self.targets.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.targets.count())]
        if have == wanted:
            return
        checked = {self.targets.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.targets.count())
                   if self.targets.item(i).checkState() == Qt.CheckState.Checked}
        self.targets.clear()
        for target in wanted:
            item = QListWidgetItem(f"{target.model}  —  {self.runtime.display_name(target.server)}")
            item.setData(Qt.ItemDataRole.UserRole, target)
            item.setCheckState(Qt.CheckState.Checked if target in checked or len(wanted) == 1
                               else Qt.CheckState.Unchecked)
            self.targets.addItem(item)
        if not self.cards:
            self._say(INTRO if wanted else NO_MODELS)

    def _say(self, text: str) -> None:
        """Show the guide over the results; alone in the pane it is centred in it."""
        self.guide.setText(text)
        self.guide.show()
        self.host_layout.setStretch(0, 0 if self.cards else 1)

    def chosen_targets(self) -> list[PromptTarget]:
        chosen = [self.targets.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.targets.count())
                  if self.targets.item(i).checkState() == Qt.CheckState.Checked]
        extra = self.extra_model.text().strip()
        if extra:
            base = chosen[0] if chosen else next(iter(self.available_targets()), None)
            if base is not None:
                chosen.append(PromptTarget(base.server, base.base_url, base.kind, extra, base.api_key))
        return chosen

    # ------------------------------------------------------------------ running
    def run_prompt(self) -> None:
        targets = self.chosen_targets()
        text = self.prompt.toPlainText().strip()
        if not targets or not text:
            self._say(MISSING_INPUT if text or targets or self.available_targets() else NO_MODELS)
            return
        request = PromptRequest(
            prompt=text, system=self.system.toPlainText().strip(),
            temperature=None if self.temperature.value() < 0 else self.temperature.value(),
            max_tokens=self.max_tokens.value() or None,
            seed=None if self.seed.value() < 0 else self.seed.value())
        self.guide.hide()
        for card in self.cards:
            card.deleteLater()
        self.cards, self.runs = [], []
        for i, target in enumerate(targets):
            card = ResultCard(target, self.runtime.display_name(target.server))
            self.results.addWidget(card)
            self.cards.append(card)
            run = PromptRun(target, request, self.runtime.hub.publish,
                            on_text=functools.partial(self.relay.text.emit, i),
                            on_done=functools.partial(self.relay.done.emit, i),
                            on_progress=functools.partial(self.relay.progress.emit, i))
            self.runs.append(run)
            run.start()
        self._running = len(self.runs)  # counted here: a run's thread outlives its done signal
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def open_benchmark(self) -> None:
        """The benchmark window, with this tab's models and prompt."""
        if self.benchmark is None:
            self.benchmark = BenchmarkDialog(self.runtime, [], self)
        self.benchmark.set_targets(self.available_targets(), self.chosen_targets())
        self.benchmark.set_request(self.prompt.toPlainText(), PromptRequest(
            "", max_tokens=self.max_tokens.value() or None))
        self.benchmark.show()
        self.benchmark.raise_()

    def cancel(self) -> None:
        for run in self.runs:
            run.cancel()

    def _finished(self, index: int, rec: RequestRecord) -> None:
        self.cards[index].finish(rec)
        self._add_history_row(0, PromptTestRun(
            rec.ts_start, rec.model, rec.ttft_s,
            rec.server_tokens_per_s if rec.server_tokens_per_s is not None else rec.client_tokens_per_s,
            rec.completion_tokens, rec.prompt_text))
        self._running -= 1
        if self._running == 0:
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)

    # ------------------------------------------------------------------ history
    def refresh(self, now: float) -> None:
        self._sync_targets()
        if not self._history_loaded:
            self._load_history()

    def _load_history(self) -> None:
        try:
            runs = prompt_test_runs(self.db.get(), HISTORY_ROWS)
        except sqlite3.Error as exc:
            log.warning("prompt history: %s", exc)
            self.db.reset()
            return
        self._history_loaded = True
        self.history.setRowCount(0)
        for run in runs:
            self._add_history_row(self.history.rowCount(), run)

    def _add_history_row(self, at: int, run: PromptTestRun) -> None:
        self.history.insertRow(at)
        cells = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.ts_start)), run.model,
                 "" if run.ttft_s is None else format_value(run.ttft_s, "s"),
                 "" if run.tokens_per_s is None else f"{run.tokens_per_s:,.1f}",
                 "" if run.completion_tokens is None else str(run.completion_tokens),
                 (run.prompt or "").replace("\n", " ")[:200]]
        for c, text in enumerate(cells):
            self.history.setItem(at, c, QTableWidgetItem(text))
