"""The benchmark window, opened from the Prompt test tab: repeat a prompt (or a prompt set) N
times against the ticked models, one after another or several at once; see each model's median
and spread (p10–p90) of TTFT and tokens/s as the repeats come in; store the run under a name;
compare two stored runs side by side ("before / after the driver update") with whether each
difference is beyond the noise between repeats. The work is :mod:`app.benchmarks`; this only
renders."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.benchmarks.prompts import PromptFileError, parse_prompts, read_prompt_file
from app.benchmarks.records import BenchmarkConfig, BenchmarkInfo, BenchResult, benchmark_results, list_benchmarks
from app.benchmarks.runner import BenchmarkRun
from app.benchmarks.stats import Comparison, change_text, compare, spread_text, summarize, verdict
from app.prompt_runner import PromptRequest, PromptTarget
from app.runtime import Runtime
from widgets.theme import PALETTE

log = logging.getLogger(__name__)
GOOD, BAD = PALETTE[2], PALETTE[5]  # bluish green, vermillion
NOISE_NOTE = ("A difference is <i>beyond the noise</i> when the 95 % interval of the change (bootstrap over each "
              "run's repeats) excludes zero. Green: better, red: worse.")


class _Relay(QObject):
    result = Signal(object)
    finished = Signal(object)


def _item(text: str, tip: str = "", colour: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if tip:
        item.setToolTip(tip)
    if colour:
        item.setForeground(QColor(colour))
    return item


class BenchmarkDialog(QDialog):
    """Run, store and compare benchmarks. One per prompt panel, kept open between uses."""

    def __init__(self, runtime: Runtime, targets: list[PromptTarget], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("llmmon — Benchmark")
        self.runtime = runtime
        self.relay = _Relay()
        self.relay.result.connect(self._on_result)
        self.relay.finished.connect(self._on_finished)
        self.run: BenchmarkRun | None = None

        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. before driver 560")
        self.targets = QListWidget()
        self.targets.setToolTip("Every ticked model gets every prompt, each repeat")
        self.prompts = QPlainTextEdit()
        self.prompts.setPlaceholderText("Prompt. Several prompts: separate them with a line holding only ---")
        load = QPushButton("Load prompt file…")
        load.clicked.connect(self.load_prompt_file)
        self.repeat = QSpinBox()
        self.repeat.setRange(1, 1000)
        self.repeat.setValue(5)
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, 64)
        self.concurrency.setSpecialValueText("1 (one after another)")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(0, 1_000_000)
        self.max_tokens.setValue(128)
        self.max_tokens.setSpecialValueText("server default")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(42)
        self.seed.setSpecialValueText("random")
        self.run_button = QPushButton("Run benchmark")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.message = QLabel()
        self.message.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Repeats", self.repeat)
        form.addRow("At once", self.concurrency)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Seed", self.seed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        setup = QWidget()
        left = QVBoxLayout(setup)
        left.addWidget(QLabel("Models"))
        left.addWidget(self.targets, 1)
        left.addWidget(QLabel("Prompts"))
        left.addWidget(self.prompts, 2)
        left.addWidget(load)
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self.message)

        self.results = QTableWidget(0, 6)
        self.results.setHorizontalHeaderLabels(["Model", "Repeats", "Errors", "TTFT s median (p10–p90)",
                                                "Tokens/s median (p10–p90)", "J/token"])
        self._table_style(self.results)
        self.results_plot = pg.PlotWidget()
        self.results_plot.setLabel("left", "tokens/s")
        self.results_plot.setLabel("bottom", "repeat")
        self.results_plot.addLegend(offset=(10, 5))
        results_page = QSplitter(Qt.Orientation.Vertical)
        results_page.addWidget(self.results)
        results_page.addWidget(self.results_plot)

        self.run_a = QComboBox()
        self.run_b = QComboBox()
        for box in (self.run_a, self.run_b):
            box.setMinimumContentsLength(30)
            box.currentIndexChanged.connect(lambda _: self.show_comparison())
        self.chart_metric = QComboBox()
        self.chart_metric.addItems(["Tokens/s", "TTFT"])
        self.chart_metric.currentIndexChanged.connect(lambda _: self.show_comparison())
        pick = QFormLayout()
        pick.addRow("A (before)", self.run_a)
        pick.addRow("B (after)", self.run_b)
        pick.addRow("Chart", self.chart_metric)
        self.comparison = QTableWidget(0, 7)
        self.comparison.setHorizontalHeaderLabels(["Model", "TTFT s: A → B", "change (95 % interval)", "",
                                                   "Tokens/s: A → B", "change (95 % interval)", ""])
        self._table_style(self.comparison)
        self.compare_plot = pg.PlotWidget()
        self.compare_plot.addLegend(offset=(10, 5))
        self.compare_note = QLabel(NOISE_NOTE)
        self.compare_note.setWordWrap(True)
        compare_page = QWidget()
        right = QVBoxLayout(compare_page)
        right.addLayout(pick)
        right.addWidget(self.comparison, 1)
        right.addWidget(self.compare_plot, 1)
        right.addWidget(self.compare_note)

        self.pages = QTabWidget()
        self.pages.addTab(results_page, "This run")
        self.pages.addTab(compare_page, "Compare runs")
        self.pages.currentChanged.connect(lambda i: self.load_runs() if i == 1 else None)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(setup)
        split.addWidget(self.pages)
        split.setSizes([330, 770])
        QVBoxLayout(self).addWidget(split)
        self.resize(1150, 720)
        self.set_targets(targets, [])
        self.stored: list[BenchmarkInfo] = []

    @staticmethod
    def _table_style(table: QTableWidget) -> None:
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)

    # ------------------------------------------------------------------ set-up
    def set_targets(self, available: list[PromptTarget], ticked: list[PromptTarget]) -> None:
        self.targets.clear()
        for target in available:
            item = QListWidgetItem(f"{target.model}  —  {target.server}")
            item.setData(Qt.ItemDataRole.UserRole, target)
            on = target in ticked or len(available) == 1
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.targets.addItem(item)

    def set_request(self, prompt: str, request: PromptRequest | None = None) -> None:
        if prompt.strip():
            self.prompts.setPlainText(prompt)
        if request is not None and request.max_tokens:
            self.max_tokens.setValue(request.max_tokens)

    def chosen_targets(self) -> list[PromptTarget]:
        return [self.targets.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.targets.count())
                if self.targets.item(i).checkState() == Qt.CheckState.Checked]

    def load_prompt_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Prompt set", str(Path.home()),
                                              "Prompt sets (*.txt *.jsonl *.md);;All files (*)")
        if not path:
            return
        try:
            prompts = read_prompt_file(Path(path))
        except PromptFileError as exc:
            self.message.setText(str(exc))
            return
        self.prompts.setPlainText("\n---\n".join(p.prompt for p in prompts))
        self.message.setText(f"{len(prompts)} prompts from {Path(path).name}")

    def config(self) -> BenchmarkConfig:
        """The benchmark the form describes; ValueError says what is missing."""
        targets = self.chosen_targets()
        if not targets:
            raise ValueError("Tick at least one model.")
        prompts = parse_prompts(self.prompts.toPlainText(), source="the prompt box")
        name = self.name.text().strip() or f"{', '.join(t.model for t in targets)} {time.strftime('%Y-%m-%d %H:%M')}"
        return BenchmarkConfig(name, tuple(targets), tuple(prompts), self.repeat.value(), self.concurrency.value(),
                               None, self.max_tokens.value() or None,
                               None if self.seed.value() < 0 else self.seed.value())

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        try:
            config = self.config()
        except ValueError as exc:
            self.message.setText(str(exc))
            return
        self.run = BenchmarkRun(config, self.runtime.hub.publish, self.runtime.store,
                                on_result=self.relay.result.emit, on_finished=self.relay.finished.emit)
        self.progress.setRange(0, self.run.total)
        self.progress.setValue(0)
        self.message.setText(f"Running {config.name!r}: {self.run.total} requests")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.pages.setCurrentIndex(0)
        self.show_results([])
        self.run.start()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _on_result(self, _result: BenchResult) -> None:
        if self.run is None:
            return
        self.progress.setValue(len(self.run.results))
        self.show_results(list(self.run.results))

    def _on_finished(self, run: BenchmarkRun) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.show_results(list(run.results))
        if run.status == "failed":
            self.message.setText(f"The benchmark failed: {run.error}")
        else:
            self.message.setText(f"#{run.benchmark_id} {run.config.name!r}: {run.status}, "
                                 f"{len(run.results)} of {run.total} requests. Compare it with another run "
                                 "in “Compare runs”.")

    def show_results(self, results: list[BenchResult]) -> None:
        summaries = summarize(results)
        self.results.setRowCount(len(summaries))
        for row, s in enumerate(summaries):
            energy = "—" if s.joules_per_token is None else f"{s.joules_per_token:.3g}"
            cells = [_item(s.key, f"{s.model} on {s.server}"), _item(str(s.runs)),
                     _item(str(s.errors), colour=BAD if s.errors else ""), _item(spread_text(s.ttft)),
                     _item(spread_text(s.tokens_per_s)), _item(energy, s.energy_source)]
            for col, item in enumerate(cells):
                self.results.setItem(row, col, item)
        self.results_plot.clear()
        self.results_plot.plotItem.legend.clear()
        for i, s in enumerate(summaries):
            mine = [r for r in results if r.model == s.model and r.server == s.server and r.ok
                    and r.tokens_per_s is not None]
            self.results_plot.plot(np.arange(1, len(mine) + 1), [r.tokens_per_s for r in mine], pen=None,
                                   symbol="o", symbolSize=7, symbolBrush=PALETTE[i % len(PALETTE)], name=s.key)

    # ------------------------------------------------------------------ comparing
    def load_runs(self) -> None:
        conn = self.runtime.store.reader()
        try:
            self.stored = list_benchmarks(conn)
        finally:
            conn.close()
        for box, default in ((self.run_a, 1), (self.run_b, 0)):
            current = box.currentData()
            box.blockSignals(True)
            box.clear()
            for info in self.stored:
                box.addItem(f"{info.label} · {info.status}", info.id)
            found = box.findData(current) if current is not None else -1
            box.setCurrentIndex(found if found >= 0 else min(default, box.count() - 1))
            box.blockSignals(False)
        self.show_comparison()

    def show_comparison(self) -> None:
        a, b = self.run_a.currentData(), self.run_b.currentData()
        if a is None or b is None:
            self.comparison.setRowCount(0)
            self.compare_note.setText("No two benchmarks stored yet: run one on the left, change something "
                                      "(a driver, a server version, a setting), run it again, and compare here.")
            return
        self.compare_note.setText(NOISE_NOTE)
        conn = self.runtime.store.reader()
        try:
            results_a, results_b = benchmark_results(conn, a), benchmark_results(conn, b)
        finally:
            conn.close()
        rows = compare(results_a, results_b)
        self.comparison.setRowCount(len(rows))
        for row, c in enumerate(rows):
            self.comparison.setItem(row, 0, _item(c.key))
            for col, d in ((1, c.ttft), (4, c.tokens_per_s)):
                if d is None:
                    missing = "only in one run" if c.a is None or c.b is None else "not measured"
                    self.comparison.setItem(row, col, _item("—"))
                    self.comparison.setItem(row, col + 1, _item(missing))
                    self.comparison.setItem(row, col + 2, _item(""))
                    continue
                colour = "" if not d.beyond_noise else (GOOD if d.better else BAD)
                spread = f"A {spread_text(d.a)}\nB {spread_text(d.b)}  (median, p10–p90, {d.a.n} and {d.b.n} repeats)"
                self.comparison.setItem(row, col, _item(f"{d.a.median:.3g} → {d.b.median:.3g}", spread))
                self.comparison.setItem(row, col + 1, _item(change_text(d), spread, colour))
                self.comparison.setItem(row, col + 2, _item(verdict(d, short=True), verdict(d), colour))
        self._draw_comparison(rows)

    def _draw_comparison(self, rows: list[Comparison]) -> None:
        """Per model, A and B side by side: the median with a p10–p90 bar."""
        plot = self.compare_plot
        plot.clear()
        plot.plotItem.legend.clear()
        speed = self.chart_metric.currentIndex() == 0
        plot.setLabel("left", "tokens/s" if speed else "TTFT", units=None if speed else "s")
        for offset, side, colour in ((-0.15, "a", PALETTE[0]), (0.15, "b", PALETTE[1])):
            xs, medians, lows, highs = [], [], [], []
            for i, c in enumerate(rows):
                summary = getattr(c, side)
                s = None if summary is None else (summary.tokens_per_s if speed else summary.ttft)
                if s is not None:
                    xs.append(i + offset)
                    medians.append(s.median)
                    lows.append(s.median - s.p10)
                    highs.append(s.p90 - s.median)
            if xs:
                plot.addItem(pg.ErrorBarItem(x=np.array(xs), y=np.array(medians), bottom=np.array(lows),
                                             top=np.array(highs), beam=0.08, pen=pg.mkPen(colour, width=2)))
                plot.plot(xs, medians, pen=None, symbol="o", symbolSize=9, symbolBrush=colour,
                          name="A (before)" if side == "a" else "B (after)")
        plot.getAxis("bottom").setTicks([[(i, c.key) for i, c in enumerate(rows)]])
        plot.setXRange(-0.6, max(len(rows) - 0.4, 0.6), padding=0)
